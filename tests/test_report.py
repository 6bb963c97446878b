"""`vaekit report`: one self-contained HTML file that renders, with every picture, offline."""

from __future__ import annotations

import base64
import html.parser
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vaekit
from browser import Browser, browser  # noqa: F401 (a fixture)
from conftest import assert_clean_error, run_cli, tiny_config
from vaekit.cli import main
from vaekit.evaluation.perceptual import build_perceptual
from vaekit.evaluation.summary import metrics_rows
from vaekit.viz import figures, report

EXPECTED_FIGURES = [
    "curves",
    "samples",
    "reconstructions",
    "interpolation_linear",
    "interpolation_slerp",
    "manifold",
    "latents",
    "kl",
]


class Page(html.parser.HTMLParser):
    """Every tag's name and attributes, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report on a tiny 2-epoch run with a 2-D latent space, its pictures beside it."""
    out = tmp_path_factory.mktemp("report") / "run"
    run = vaekit.train(
        tiny_config(out, **{"train.epochs": 2, "model.latent_dim": 2, "data.noise_examples": 512})
    )  # 51 test images
    return report.build_report(run, iw_samples=5, max_test=40)


def test_report_is_one_self_contained_file(built: Path) -> None:
    page = parse(built)
    text = built.read_text(encoding="utf-8")
    assert built.name == "report.html" and text.startswith("<!DOCTYPE html>")
    for tag, attrs in page.tags:  # nothing the browser would fetch
        assert tag not in ("script", "link", "iframe", "object", "embed"), tag
        for name in ("src", "href"):
            value = attrs.get(name)
            assert value is None or value.startswith("data:") or value.startswith("#"), value
    assert "http://" not in text and "https://" not in text and "url(" not in text
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    assert [a["alt"] for a in images] == EXPECTED_FIGURES
    for attrs in images:  # each embedded PNG is the file written beside the report
        prefix = "data:image/png;base64,"
        src = attrs["src"] or ""
        assert src.startswith(prefix)
        png = base64.b64decode(src[len(prefix) :], validate=True)
        name = attrs["alt"] or ""
        file = figures.FILES.get(name, f"{name}.png")
        assert png == (built.parent / file).read_bytes(), name
        with Image.open(io.BytesIO(png)) as image:
            assert image.format == "PNG" and np.asarray(image).std() > 1, name


def test_report_shows_the_config_and_the_metrics_table(built: Path) -> None:
    words = " ".join(parse(built).text)
    for needle in (
        "negative ELBO",
        "log p(x), K = 5",
        "±",
        "active units",
        "SSIM",
        "latent_dim: 2",
        "likelihood: bernoulli",
        "40 images of the test set of noise",
        "The learned manifold: images decoded over a 20 x 20 grid of the 2-D",
        # which split each number comes from: the table is the test set's, the curves and
        # the epoch table the training and validation sets'
        "Test-set metrics (vaekit report)",
        "Training curves (training and validation sets, from metrics.jsonl)",
        "val nelbo",
    ):
        assert needle in words, needle
    assert "kl per dim" not in words and "activity" not in words  # lists have their figure
    assert "rFID" not in words and "LPIPS" not in words  # only when asked for


def test_report_shows_rfid_and_lpips_when_asked(built: Path, tmp_path: Path) -> None:
    lpips = build_perceptual("lpips-vgg", "cpu", "random", "random")
    page = report.build_report(
        built.parent, out_dir=tmp_path, iw_samples=0, max_test=20, rfid="random", lpips=lpips
    )
    words = " ".join(parse(page).text)
    for needle in ("rFID", "random features", "LPIPS", "lpips-vgg (random weights)"):
        assert needle in words, needle


def test_metrics_rows_put_known_metrics_first_with_units() -> None:
    rows = metrics_rows(
        {
            "zeta": 1.5,
            "nelbo": 100.0,
            "log_px": -98.5,
            "log_px_stderr": 0.25,
            "iw_samples": 10,
            "kl_per_dim": [1, 2],
            "n": 1000,
            "seconds": {"elbo": 1.0},
        }
    )
    assert [r[0] for r in rows] == ["negative ELBO", "log p(x), K = 10", "test images", "zeta"]
    assert rows[1][1] == "-98.50 ± 0.250" and rows[2][1] == "1,000"


def test_report_renders_with_every_image_in_chromium(built: Path, browser: Browser) -> None:  # noqa: F811
    browser.get(built.resolve().as_uri())
    browser.wait_for("return document.readyState === 'complete'")
    loaded = browser.execute(
        "return Array.from(document.images).map(i => "
        "[i.alt, i.complete, i.naturalWidth, i.getBoundingClientRect()"
        ".width])"
    )
    assert [name for name, *_ in loaded] == EXPECTED_FIGURES
    for name, complete, natural_width, shown_width in loaded:
        assert complete and natural_width > 0 and shown_width > 0, name
    # what a reader sees: the top of the page is not blank, and has a table and a chart
    shot = np.asarray(Image.open(io.BytesIO(browser.screenshot())).convert("RGB"))
    assert shot.std() > 10
    assert browser.execute("return document.querySelectorAll('table tr').length") >= 8


def test_report_command_writes_into_the_run_and_prints_the_path(
    trained_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    result = run_cli(
        "report", str(run), "--iw-samples", "3", "--max-test", "20", "--rfid", "random"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(run / "report.html")
    assert "rFID" in (run / "report.html").read_text(encoding="utf-8")
    for name in figures.FILES.values():
        assert (run / name).is_file(), name  # 4-D latents: manifold of the 2 most active


def test_report_on_one_test_image_leaves_out_the_interpolations(
    trained_run: Path, tmp_path: Path
) -> None:
    path = report.build_report(trained_run, out_dir=tmp_path, iw_samples=0, max_test=1)
    assert "No interpolations" in path.read_text(encoding="utf-8")
    assert not (tmp_path / figures.FILES["interpolation_linear"]).exists()


def test_report_command_refuses_bad_options_in_one_line(
    trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_clean_error(run_cli("report", str(trained_run), "--max-test", "0"), "--max-test")
    assert main(["report", str(trained_run.parent / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing does not exist" in err
