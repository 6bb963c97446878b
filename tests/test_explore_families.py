"""The latent explorer on every model family: its prior draws are the model's own
(`/sample?seed=S` gives what `model.sample` draws with a generator seeded S), and the
numbers it shows are the model's (docs/families.md, "What vaekit explore shows")."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from browser import Browser, browser  # noqa: F401 (a fixture)
from test_explore import assert_4xx, get, start
from vaekit.config import ModelConfig
from vaekit.evaluation import likelihood, metrics
from vaekit.models import VAE, VQVAE
from vaekit.models.code_prior import CodePrior
from vaekit.viz import explore, grid
from vaekit.viz.explore.latents import BadRequest

SHAPE = (1, 6, 6)


def tiny(
    seed: int = 0, shape: tuple[int, int, int] = SHAPE, classes: int = 0, **options: Any
) -> VAE:
    """A tiny model of the family `options` names (`classes`: class-conditional), its
    weights spread so that its prior and posterior are far from their starting points
    (N(0, I), identity flows)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(hidden=[16], latent_dim=3, conditional=classes > 0, **options)
    model = VAE.from_config(cfg, shape, num_classes=classes)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def images(n: int = 40, shape: tuple[int, ...] = SHAPE) -> torch.Tensor:
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(1))


@pytest.fixture
def served() -> Iterator[Any]:
    servers: list[explore.ExplorerServer] = []

    def serve(model: VAE | explore.Explorer, x: torch.Tensor | None = None) -> Any:
        """A server of the explorer (or of one of `model` over x), and that explorer."""
        if isinstance(model, explore.Explorer):
            servers.append(start(model))
            return servers[-1]
        ex = explore.Explorer(model, x)
        servers.append(start(ex))
        return servers[-1], ex

    yield serve
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def json_of(server: explore.ExplorerServer, path: str) -> Any:
    status, _, body = get(server, path)
    assert status == 200, body
    return json.loads(body)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)), dtype=np.int16)


def model_sample_pixels(model: VAE, seed: int, label: int | None = None) -> np.ndarray:
    image = model.sample(1, label, generator=torch.Generator().manual_seed(seed))
    return grid.make_grid(image, padding=0)[..., 0].astype(np.int16)


def draws(server: explore.ExplorerServer, seeds: range) -> torch.Tensor:
    return torch.tensor([json_of(server, f"/sample?seed={s}")["z"] for s in seeds])


# -- continuous latents -------------------------------------------------------------------
SPATIAL = {"arch": "conv", "channels": [4, 8], "blocks_per_level": 0, "latent_channels": 2,
           "shape": (1, 8, 8)}  # fmt: skip


@pytest.mark.parametrize(
    "options",
    [{}, {"prior": "vamp", "pseudo_inputs": 5}, {"posterior": "iaf"},
     {"posterior": "ladder", "latent_dims": [3, 2]},
     {"prior": "vamp", "pseudo_inputs": 6, "classes": 3},
     {"posterior": "ladder", "latent_dims": [3, 2], "classes": 3},
     {"posterior": "iaf", **SPATIAL}],
    ids=["gaussian", "vamp", "iaf", "ladder", "conditional-vamp", "conditional-ladder",
         "spatial-iaf"],
)  # fmt: skip
def test_explorer_samples_are_the_models_own_prior_draws(
    served: Any, options: dict[str, Any]
) -> None:
    model = tiny(**options)
    label = 2 if model.conditional else None
    x = images(shape=options.get("shape", SHAPE))
    ex = explore.Explorer(model, x, torch.arange(len(x)) % 3 if label else None)
    server = served(ex)
    for seed in (0, 7, 123456789):
        z = json_of(server, f"/sample?seed={seed}")["z"]
        expected = model.sample_prior(1, torch.Generator().manual_seed(seed))[0]
        assert z == pytest.approx(expected.tolist(), abs=1e-6)
        # what the page decodes is the image model.sample draws with that seed
        query = "/decode?z=" + ",".join(f"{v:.6f}" for v in z)
        png = get(server, query + ("" if label is None else f"&label={label}"))[2]
        assert np.abs(pixels(png) - model_sample_pixels(model, seed, label)).max() <= 1


def test_vamp_and_ladder_draws_are_not_standard_normal(served: Any) -> None:
    """The page's old prior button drew N(0, I) in the browser: these priors are not."""
    for options in ({"prior": "vamp", "pseudo_inputs": 5}, {"posterior": "ladder",
                    "latent_dims": [3, 2]}):  # fmt: skip
        server, _ = served(tiny(**options), images())
        z = draws(server, range(300)).double()
        z1 = z[:, :3]  # the VampPrior's latent; a ladder's bottom layer, read by the decoder
        off_mean = z1.mean(0).abs().max()
        off_scale = (z1.std(0).log().abs()).max()
        # 300 N(0, 1) draws: |mean| > 0.4 or |log sd| > 0.35 are each beyond 6 standard errors
        assert off_mean > 0.4 or off_scale > 0.35, (options, z1.mean(0), z1.std(0))


def test_vamp_and_iaf_show_the_models_kl_estimate_not_a_closed_form(served: Any) -> None:
    x = images()
    for options in ({"prior": "vamp", "pseudo_inputs": 5}, {"posterior": "iaf"}):
        model = tiny(**options)
        server, _ = served(model, x)
        info = json_of(server, "/info")
        assert info["kl"] is None  # the MC KL does not split into dimensions
        assert "does not split" in info["numbers_note"]
        # the model's own estimate: log q(z|x) (the flow's log-det in it) - log p(z)
        assert info["kl_total"] == pytest.approx(likelihood.elbo_stats(model, x)["kl"], rel=1e-6)
        with torch.no_grad():
            mu, logvar = model.gaussian(model.prepare(x))  # type: ignore[operator]
        # the closed form of the Gaussian heads against N(0, I): what the page showed before
        closed = float((0.5 * (mu**2 + logvar.exp() - 1 - logvar)).sum(1).mean())
        assert abs(info["kl_total"] - closed) > 0.05
        activity = metrics.active_units(model, x).activity
        assert info["activity"] == pytest.approx(activity.tolist(), rel=1e-6)
        assert info["shown"] == sorted(range(3), key=lambda d: -activity[d])
        # an IAF's posterior point is the flow's f(mu), as the model's posterior gives it
        z = json_of(server, "/encode?index=2")["z"]
        point = model.posterior(model.prepare(x[2:3]))[0][0]
        assert z == pytest.approx(point.tolist(), abs=1e-4)


def test_ladder_names_its_layers_and_shows_its_own_kl(served: Any) -> None:
    model, x = tiny(posterior="ladder", latent_dims=[3, 2]), images()
    info = json_of(served(model, x)[0], "/info")
    assert info["posterior"] == "ladder" and info["layers"] == [3, 2] and info["latent_dim"] == 5
    assert info["kl"] == pytest.approx(metrics.kl_per_dimension(model, x).tolist(), rel=1e-6)
    assert info["kl_total"] == pytest.approx(likelihood.elbo_stats(model, x)["kl"], rel=1e-5)
    # the sliders span the top-down prior: mean +- 4 sd of 2,048 seeded draws per dimension
    z = model.sample_prior(2048, torch.Generator().manual_seed(0)).double()
    low = (z.mean(0) - 4 * z.std(0)).tolist()
    assert [r[0] for r in info["range"]] == pytest.approx(low, abs=0.006)


def test_gaussian_numbers_and_range_are_as_before(served: Any) -> None:
    model, x = tiny(), images()
    info = json_of(served(model, x)[0], "/info")
    assert info["kl"] == pytest.approx(metrics.kl_per_dimension(model, x).tolist(), rel=1e-6)
    assert info["range"] == [[-4.0, 4.0]] * 3 and info["can_sample"]
    assert info["posterior"] == "gaussian" and info["prior"] == "standard"


# -- a VQ-VAE: codes ------------------------------------------------------------------------
def tiny_vq(prior: bool = False) -> VQVAE:
    model = tiny(
        arch="conv", channels=[4, 8], blocks_per_level=0, latent_channels=2, posterior="vq",
        codebook_size=8, shape=(1, 8, 8),
    )  # fmt: skip
    assert isinstance(model, VQVAE)
    if prior:
        torch.manual_seed(0)
        model.attach_prior(CodePrior(8, model.code_map_shape(), channels=8, layers=2).eval())
    return model


def test_vq_explorer_shows_codes_and_decodes_edits(served: Any) -> None:
    model, x = tiny_vq(), images(shape=(1, 8, 8))
    server, _ = served(model, x)
    info = json_of(server, "/info")
    assert info["kl"] is None and info["activity"] is None and info["shown"] == []
    codes = info["codes"]
    assert codes["shape"] == [2, 2] and codes["codebook_size"] == 8
    expected = torch.bincount(model.encode_codes(x).flatten(), minlength=8)
    assert codes["counts"] == expected.tolist() and codes["codes_used"] == int((expected > 0).sum())
    encoded = json_of(server, "/encode?index=3")
    assert encoded["codes"] == model.encode_codes(x[3:4]).flatten().tolist()
    edited = list(encoded["codes"])
    edited[0] = (edited[0] + 1) % 8
    for c in (encoded["codes"], edited):
        png = get(server, "/decode?codes=" + ",".join(map(str, c)))[2]
        image = model.decode_images(torch.tensor(c).reshape(1, 2, 2))
        assert np.abs(pixels(png) - grid.make_grid(image, padding=0)[..., 0]).max() <= 1
    assert (
        get(server, "/decode?codes=" + ",".join(map(str, edited)))[2]
        != get(server, "/decode?codes=" + ",".join(map(str, encoded["codes"])))[2]
    )


def test_vq_without_a_code_prior_refuses_to_sample_in_one_line(served: Any) -> None:
    server, _ = served(tiny_vq(), images(shape=(1, 8, 8)))
    info = json_of(server, "/info")
    assert not info["can_sample"] and "vaekit train-prior" in info["sample_note"]
    status, _, body = get(server, "/sample?seed=0")
    assert_4xx(status, body, 409, "vaekit train-prior RUN", "edit its codes")


def test_vq_with_a_code_prior_samples_its_codes(served: Any) -> None:
    model = tiny_vq(prior=True)
    server, _ = served(model, images(shape=(1, 8, 8)))
    assert json_of(server, "/info")["can_sample"]
    for seed in (0, 5):
        drawn = json_of(server, f"/sample?seed={seed}")
        codes = model.sample_codes(1, torch.Generator().manual_seed(seed))
        assert drawn["codes"] == codes.flatten().tolist()
        png = get(server, "/decode?codes=" + ",".join(map(str, drawn["codes"])))[2]
        assert np.abs(pixels(png) - model_sample_pixels(model, seed)).max() <= 1


@pytest.mark.parametrize(
    "vq,path,needle",
    [
        (True, "/decode?codes=0,0,0", "has 3 values"),
        (True, "/decode?codes=0,0,0,8", "codes[3]"),
        (True, "/decode?codes=0,0,-1,0", "codes[2]"),
        (True, "/decode?codes=0,0,0,0&z=0,0,0,0,0,0,0,0", "not both"),
        (False, "/decode?codes=0,0,0", "not a VQ-VAE"),
        (False, "/sample?seed=-1", "'seed'"),
        (False, "/sample", "missing parameter 'seed'"),
        (False, "/sample?seed=1&n=2", "unknown parameter"),
    ],
)
def test_bad_codes_and_seeds_are_400(served: Any, vq: bool, path: str, needle: str) -> None:
    model = tiny_vq() if vq else tiny()
    server, _ = served(model, images(shape=(1, 8, 8) if vq else SHAPE))
    status, _, body = get(server, path)
    assert_4xx(status, body, 400, needle)


# -- the page -------------------------------------------------------------------------------
def test_page_draws_the_vampprior_and_edits_vq_codes(
    served: Any,
    browser: Browser,  # noqa: F811 (the fixture imported above)
) -> None:
    server, _ = served(tiny(prior="vamp", pseudo_inputs=5), images())
    host, port = server.server_address[:2]
    browser.get(f"http://{host}:{port}/")
    browser.wait_for("return window.explorer && window.explorer.decodes > 0")
    browser.execute('document.getElementById("prior").click()')
    seed = browser.wait_for("return window.explorer.seed")
    z = json_of(server, f"/sample?seed={seed}")["z"]
    assert browser.execute("return window.explorer.z") == pytest.approx(z, abs=1e-9)
    note = browser.execute('return document.getElementById("slider-note").textContent')
    assert "No KL per dimension" in note and "prior mean +- 4 sd" in note

    server, _ = served(tiny_vq(), images(shape=(1, 8, 8)))
    host, port = server.server_address[:2]
    browser.get(f"http://{host}:{port}/")
    ready = (
        'const i = document.getElementById("decoded"); return window.explorer && '
        'window.explorer.decodes > 0 && i.dataset.state === "ready"'
    )
    browser.wait_for(ready)
    assert browser.execute('return document.querySelectorAll("#codes input").length') == 4
    assert browser.execute('return document.getElementById("prior").disabled') is True
    edited = [*browser.execute("return window.explorer.codes")]
    edited[2] = (edited[2] + 1) % 8
    browser.execute(
        f'const c = document.getElementById("c2"); c.value = "{edited[2]}";'
        'c.dispatchEvent(new Event("change"))'
    )
    browser.wait_for(
        'const i = document.getElementById("decoded"); return i.dataset.state === "ready" '
        f'&& i.dataset.z === "codes={",".join(map(str, edited))}"'
    )
    assert browser.execute('return document.getElementById("error").textContent') == ""


DECODED = (
    'const i = document.getElementById("decoded"); return window.explorer && '
    'window.explorer.decodes > 0 && i.dataset.state === "ready" && i.dataset.z'
)
PAGE_STATE = """return {
    boxes: [...document.querySelectorAll("#codes input")].map((i) => Number(i.value)),
    codes: window.explorer.codes, decoded: document.getElementById("decoded").dataset.z,
    encoded: !document.getElementById("encoded").hidden,
    original: document.getElementById("original").getAttribute("src"),
    caption: document.getElementById("encoded-caption").textContent,
    note: document.getElementById("slider-note").textContent};"""


def test_vq_page_opens_on_the_first_test_image_s_codes(
    served: Any,
    browser: Browser,  # noqa: F811 (the fixture imported above)
) -> None:
    """Not on an all-zero map: the boxes hold test image 0's codes, that map is decoded,
    and the image is shown beside it."""
    model, x = tiny_vq(), images(shape=(1, 8, 8))
    first = model.encode_codes(x[:1]).flatten().tolist()
    assert first != [0] * len(first)  # else the test could not tell
    server, _ = served(model, x)
    host, port = server.server_address[:2]
    browser.get(f"http://{host}:{port}/")
    assert browser.wait_for(DECODED) == "codes=" + ",".join(map(str, first))
    page = browser.execute(PAGE_STATE)
    assert page["boxes"] == page["codes"] == first
    assert page["encoded"] and page["original"] == "/image?index=0"
    assert page["caption"].startswith("test image 0: its codes are in the boxes")
    assert page["note"].endswith("The map opened on test image 0's codes.")


def test_vq_page_opens_on_zeros_saying_why_when_no_image_encodes(
    served: Any,
    browser: Browser,  # noqa: F811 (the fixture imported above)
) -> None:
    ex = explore.Explorer(tiny_vq(), images(shape=(1, 8, 8)))

    def cannot_encode(index: int) -> dict[str, Any]:
        raise BadRequest("no encoder here", 503)

    ex.encode = cannot_encode  # type: ignore[method-assign]
    server = served(ex)
    host, port = server.server_address[:2]
    browser.get(f"http://{host}:{port}/")
    assert browser.wait_for(DECODED) == "codes=0,0,0,0"
    page = browser.execute(PAGE_STATE)
    assert page["boxes"] == [0, 0, 0, 0] and not page["encoded"]
    assert page["note"].endswith("The map opened at all zeros: error 503: no encoder here."), page[
        "note"
    ]
