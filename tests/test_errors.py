"""errors.first_line and errors.require: the one place an exception becomes a line of a
message, and the one place an optional extra is imported or named in one line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vaekit.errors import ConfigError, DataError, first_line, require


def test_first_line_is_the_first_line_or_the_type() -> None:
    assert first_line(ValueError("  bad header\nat byte 7\n")) == "bad header"
    assert first_line(ValueError("")) == "ValueError"
    assert first_line(OSError("\n  \n")) == "OSError"
    assert first_line(OSError("disk full\nmore"), named=True) == "OSError: disk full"
    assert first_line(KeyError(), named=True) == "KeyError"


def test_require_imports_the_module_or_its_attribute() -> None:
    assert require("tables", "json", "reading") is sys.modules["json"]
    assert require("tables", "json", "reading", attribute="dumps") is sys.modules["json"].dumps


def test_a_missing_extra_is_one_line_naming_the_pip_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # as the tests of each extra do
    with pytest.raises(DataError) as e:
        require("tables", "pandas", "reading .csv files", also="; or use .npy", error=DataError)
    assert str(e.value) == (
        "reading .csv files needs pandas: pip install 'vaekit[tables]'; or use .npy"
    )
    with pytest.raises(ConfigError, match=r"^x needs the nosuch library: pip install"):
        require("tables", "nosuch_extra_package.io", "x", package="the nosuch library")


def test_an_installed_extra_that_cannot_be_imported_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "brokenextra").mkdir()
    (tmp_path / "brokenextra" / "__init__.py").write_text("import no_such_dependency_here\n")
    (tmp_path / "crashingextra.py").write_text(
        "raise RuntimeError('operator does not exist\\nx')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as e:
        require("demo", "brokenextra", "building")
    assert str(e.value) == (
        "brokenextra is installed but cannot be imported: No module named 'no_such_dependency_here'"
    )
    with pytest.raises(ConfigError) as e:
        require("demo", "crashingextra", "building")
    assert (
        str(e.value) == "crashingextra is installed but cannot be imported: operator does not exist"
    )
    with pytest.raises(ConfigError, match="json is installed but cannot be imported: .*nothing"):
        require("demo", "json", "building", attribute="nothing")
