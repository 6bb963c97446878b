"""The prior over a VQ-VAE's codes: the gated PixelCNN's causality (no cell reads itself or
a later one, and no blind spot), that it learns a predictable code map, and `vaekit
train-prior` -> load -> sample -> evaluate -> report through the CLI, with the refusals
and the damaged files a user can meet."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import vaekit
from conftest import assert_one_line_error, tiny_config
from vaekit import cli
from vaekit.errors import ConfigError
from vaekit.models.code_prior import CodePrior, code_map
from vaekit.training.prior_loop import fit

CONV_VQ = {
    "model.arch": "conv",
    "model.channels": [4, 8],
    "model.blocks_per_level": 0,
    "model.latent_channels": 2,
    "model.posterior": "vq",
    "model.codebook_size": 16,
    "data.noise_examples": 96,
    "train.batch_size": 32,
}
SMALL_PRIOR = ["--epochs", "2", "--channels", "8", "--layers", "2", "--batch-size", "16"]


# -- causality ----------------------------------------------------------------------------
def wrong_cells(logits_of: nn.Module, channels: int, shape: tuple[int, int]) -> list[str]:
    """The cells whose logits depend on a cell at or after them in raster order (a leak),
    or do not depend on a cell before them (a blind spot): d logits(i) / d input(k) must be
    exactly zero for k >= i and nonzero for k < i (a field that covers the whole map)."""
    h, w = shape
    e = torch.randn(4, channels, h, w, requires_grad=True)
    wrong = []
    for i in range(h * w):
        e.grad = None
        logits_of(e)[:, :, i // w, i % w].sum().backward()
        reads = (e.grad.abs().sum(dim=(0, 1)) > 0).flatten()
        leaks = reads[i:].nonzero().flatten().tolist()
        blind = (~reads[:i]).nonzero().flatten().tolist()
        if leaks or blind:
            wrong.append(f"cell {i}: reads {leaks}, blind to {blind}")
    return wrong


class MaskedStack(nn.Module):
    """The PixelCNN of 2016's first paper: 3x3 convolutions masked A then B, whose field
    misses the cells up and to the right (the blind spot the gated stacks remove)."""

    def __init__(self, channels: int, layers: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(channels, channels, 3, padding=1) for _ in range(layers)
        )
        for n, conv in enumerate(self.convs):
            mask = torch.ones_like(conv.weight)
            mask[:, :, 1, 1 if n == 0 else 2 :] = 0  # A: not the centre; B: the centre
            mask[:, :, 2] = 0
            conv.register_buffer("mask", mask)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            e = torch.tanh(nn.functional.conv2d(e, conv.weight * conv.mask, conv.bias, padding=1))
        return e


@pytest.mark.parametrize("shape", [(4, 5), (1, 6), (1, 1)])
def test_each_cell_reads_exactly_the_cells_before_it(shape: tuple[int, int]) -> None:
    prior = CodePrior(5, shape, channels=8, layers=5)
    assert wrong_cells(prior.logits_of, 8, shape) == []


def test_the_causality_check_finds_a_masked_stacks_blind_spot_and_a_leak() -> None:
    naive = wrong_cells(MaskedStack(8, 5), 8, (4, 5))
    assert naive and all("reads []" in line for line in naive)  # causal, but blind
    assert "cell 5: reads [], blind to [2, 3, 4]" in naive  # the row above, right of (0, 1)
    leaky = CodePrior(5, (3, 3), channels=8, layers=2)
    leaky.logits_of = lambda e: leaky.head(leaky.stack[0](e, e)[1])  # type: ignore[method-assign]
    assert any(
        "reads [0" in line or "reads [1" in line for line in wrong_cells(leaky.logits_of, 8, (3, 3))
    )


# -- learning ----------------------------------------------------------------------------
def test_the_nll_of_a_predictable_code_map_drops_when_trained() -> None:
    k, h, w = 6, 3, 4
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    shifts = torch.arange(64) % k  # 6 maps: each cell one more than the cell to its left
    codes = ((i + j)[None] + shifts[:, None, None]) % k
    prior = CodePrior(k, (h, w), channels=16, layers=2)
    with torch.no_grad():
        before = float(prior.nll(codes).mean())
    history, best = fit(prior, codes[:48], codes[48:], epochs=40, batch_size=16, lr=1e-2,
                        seed=0, progress=False)  # fmt: skip
    prior.load_state_dict(best["weights"])
    with torch.no_grad():
        after = float(prior.eval().nll(codes[48:]).mean())
    assert before > 0.9 * h * w * math.log(k)  # about uniform at the start
    assert after < math.log(k) + 1.0  # the first cell (1 of 6) and little else
    assert best["val_nll"] == min(r["val_nll"] for r in history) == pytest.approx(after, rel=1e-4)
    draws = prior.sample(20, torch.Generator().manual_seed(0))
    assert ((draws[:, :, 1:] - draws[:, :, :-1]) % k == 1).float().mean() > 0.9


# -- the commands ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vq_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny conv VQ-VAE run (7x7 codes of 16) without a prior."""
    return vaekit.train(tiny_config(tmp_path_factory.mktemp("vq") / "run", **CONV_VQ))


@pytest.fixture(scope="module")
def prior_run(vq_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run, copied, with a code prior trained by `vaekit train-prior`."""
    run = tmp_path_factory.mktemp("prior") / "run"
    shutil.copytree(vq_run, run)
    assert cli.main(["train-prior", str(run), *SMALL_PRIOR]) == 0
    return run


def main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_sample_and_fid_refuse_without_a_prior(vq_run: Path, capsys, tmp_path: Path) -> None:
    code, _, err = main(capsys, "sample", str(vq_run), "--out", str(tmp_path / "s.png"))
    assert_one_line_error(code, err, "prior over its codes", "vaekit train-prior RUN")
    code, _, err = main(capsys, "evaluate", str(vq_run), "--fid", "random")
    assert_one_line_error(code, err, "--fid", "vaekit train-prior RUN")
    assert not (tmp_path / "s.png").exists()


def test_train_prior_load_sample_evaluate_report(prior_run: Path, capsys, tmp_path: Path) -> None:
    record = json.loads((prior_run / "code_prior.json").read_text())
    assert record["settings"] == {"codebook_size": 16, "code_shape": [7, 7], "channels": 8,
                                  "layers": 2, "kernel": 3}  # fmt: skip
    epochs = record["training"]["history"]
    assert [r["epoch"] for r in epochs] == [1, 2] and record["training"]["val_codes"] > 0
    model = vaekit.load(prior_run)
    assert model.has_prior and model.code_prior.training_record == record["training"]
    # seeded: the same seed draws the same images, another seed others
    paths = [tmp_path / f"{name}.npy" for name in ("a", "b", "c")]
    for path, seed in zip(paths, ("3", "3", "4"), strict=True):
        assert main(capsys, "sample", str(prior_run), "--n", "5", "--seed", seed,
                    "--out", str(path))[0] == 0  # fmt: skip
    a, b, c = (np.load(p) for p in paths)
    assert a.shape == (5, 1, 28, 28) and 0 <= a.min() and a.max() <= 1
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    codes = model.sample_codes(5, generator=torch.Generator().manual_seed(3))
    assert np.allclose(a, model.decode_images(codes).numpy())  # samples are decoded codes
    code, out, _ = main(capsys, "evaluate", str(prior_run), "--json", "--fid", "random",
                        "--fid-samples", "16")  # fmt: skip
    stats = json.loads(out)
    data = vaekit.loading.load_with_data(prior_run)[1]
    test_codes = code_map(model.encode_codes(data.x))
    with torch.no_grad():
        nats = float(model.code_prior.nll(test_codes).mean())
    assert stats["prior_nll"] == pytest.approx(nats, rel=1e-5)
    assert stats["prior_bits_per_code"] == pytest.approx(nats / (49 * math.log(2)))
    assert stats["prior_bits_per_dim"] == pytest.approx(nats / (784 * math.log(2)))
    assert stats["fid_features"] == "random" and math.isfinite(stats["fid"])
    _, out, _ = main(capsys, "evaluate", str(prior_run))
    assert "bits per code" in out and "bits per image dimension" in out
    assert main(capsys, "report", str(prior_run), "--max-test", "8")[0] == 0
    page = (prior_run / "report.html").read_text()
    assert "code maps drawn cell by cell" in page and (prior_run / "samples.png").exists()
    assert "bits per image dimension" in page


def test_damaged_missing_or_stale_prior_files(prior_run: Path, capsys, tmp_path: Path) -> None:
    def copy(name: str) -> Path:
        return Path(shutil.copytree(prior_run, tmp_path / name))

    torn = copy("torn")
    data = (torn / "code_prior.safetensors").read_bytes()
    (torn / "code_prior.safetensors").write_bytes(data[: len(data) // 2])
    code, _, err = main(capsys, "sample", str(torn))
    assert_one_line_error(code, err, "code_prior.json is incomplete or corrupt", "train-prior")
    missing = copy("missing")
    (missing / "code_prior.safetensors").unlink()
    code, _, err = main(capsys, "evaluate", str(missing))
    assert_one_line_error(code, err, "code_prior.safetensors is missing", "train-prior")
    (missing / "code_prior.json").write_text("{")
    code, _, err = main(capsys, "sample", str(missing))
    assert_one_line_error(code, err, "code_prior.json")
    # the model trained further: its prior is left off; it still evaluates, and sampling says why
    stale = copy("stale")
    model = vaekit.load(stale)
    with torch.no_grad():
        model.quantize.embedding.weight.add_(0.01)
    model.attach_prior(None)
    model.save_pretrained(stale)
    assert (stale / "code_prior.json").exists()
    assert main(capsys, "evaluate", str(stale))[0] == 0
    code, _, err = main(capsys, "sample", str(stale))
    assert_one_line_error(code, err, "trained on the codes of another model", "train-prior")


def test_train_prior_from_python_saves_with_the_model(vq_run: Path, tmp_path: Path) -> None:
    model = vaekit.load(vq_run)
    result = vaekit.train_prior(model, epochs=1, channels=4, layers=1, batch_size=32)
    assert result.model is model and model.has_prior and result.saved_in is None
    assert len(result.history) == 1 and not (vq_run / "code_prior.json").exists()
    model.save_pretrained(tmp_path / "saved")
    loaded = vaekit.load(tmp_path / "saved")
    g = [torch.Generator().manual_seed(1) for _ in range(2)]
    assert torch.equal(model.sample(3, generator=g[0]), loaded.sample(3, generator=g[1]))
    with torch.no_grad():  # trained further with the prior attached: its codes moved on
        model.quantize.embedding.weight.add_(0.01)
    model.save_pretrained(tmp_path / "moved")
    assert (tmp_path / "moved" / "model.safetensors").exists()
    assert not (tmp_path / "moved" / "code_prior.json").exists()
    gaussian = vaekit.train(tiny_config(tmp_path / "gaussian"))
    with pytest.raises(ConfigError, match="a Gaussian VAE, whose prior is N"):
        vaekit.train_prior(gaussian)
    with pytest.raises(ConfigError, match="epochs must be"):
        vaekit.train_prior(model, epochs=0)
    folder = tmp_path / "diffusers-vqmodel"  # a folder diffusers wrote: no run to write into
    folder.mkdir()
    (folder / "config.json").write_text('{"_class_name": "VQModel"}')
    with pytest.raises(ConfigError, match="no vaekit run folder"):
        vaekit.train_prior(str(folder))


def test_a_vector_latents_codes_are_a_one_row_map(tmp_path: Path) -> None:
    vq = {"model.posterior": "vq", "model.codebook_size": 8, "model.code_dim": 2}
    run = vaekit.train(tiny_config(tmp_path / "mlp", **vq))  # latent_dim 4: two codes
    result = vaekit.train_prior(str(run), epochs=1, channels=4, layers=1)
    assert result.saved_in == run and result.model.code_prior.code_shape == (1, 2)
    model = vaekit.load(run)
    codes = model.sample_codes(6, generator=torch.Generator().manual_seed(0))
    assert codes.shape == (6, 2) and codes.dtype == torch.int64 and 0 <= codes.min() < 8
    assert model.sample(6).shape == (6, 1, 28, 28)
    stats = vaekit.evaluate(model, torch.rand(4, 1, 28, 28))
    assert stats["prior_bits_per_code"] == pytest.approx(stats["prior_nll"] / (2 * math.log(2)))


def test_push_sends_the_prior_and_a_hub_load_brings_it(
    prior_run: Path, offline_cache: Path
) -> None:
    from conftest import write_hub_cache
    from vaekit.publish import plan_push

    plan = plan_push(prior_run, "alice/vq", run_evaluate=False)
    assert {"code_prior.safetensors", "code_prior.json"} <= set(plan.files)
    files = {k: v if isinstance(v, bytes) else Path(v).read_bytes() for k, v in plan.files.items()}
    write_hub_cache(offline_cache, "alice/vq", files)
    model, original = vaekit.load("hf://alice/vq"), vaekit.load(prior_run)
    assert model.has_prior
    g = [torch.Generator().manual_seed(2) for _ in range(2)]
    assert torch.equal(
        model.sample_codes(3, generator=g[0]), original.sample_codes(3, generator=g[1])
    )
