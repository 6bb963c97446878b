"""Text templates shipped as package data: the model card (modelcard.md), the report page
(report.html) and the explorer page (explorer.html).

They are files so that they read, diff and lint as the Markdown and HTML they are; the
code fills their `$name` placeholders with `string.Template` (`$$` is a literal `$`).
"""

from __future__ import annotations

from importlib import resources
from string import Template


def read(name: str) -> str:
    """The text of template `name`."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def render(name: str, **values: object) -> str:
    """Template `name` with every `$placeholder` filled (a missing value is a KeyError)."""
    return Template(read(name)).substitute({k: str(v) for k, v in values.items()})
