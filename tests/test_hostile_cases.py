"""The numbered cases of the hostile sweep (issue 15) that are not a run directory's, a data
file's, the explorer's or the Hub's (tests/test_rundir.py, test_data_hostile.py,
test_explore_hostile.py, test_hub_hostile.py hold those), each as the sweep found it:
non-finite values (3), small inputs asking for huge memory (4), options that crashed or
segfaulted (6), malformed run files (9), the Python API (10), a resume on swapped data
(11), and the first-run experience (progress bars only on a terminal, `make demo`
installing only what the demo needs)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import vaekit
from conftest import (
    ROOT,
    TINY_FLAGS,
    assert_clean_error,
    assert_one_line_error,
    run_cli,
    tiny_config,
)
from vaekit.config import ModelConfig
from vaekit.errors import CheckpointError, ConfigError, DataError, TrainingDiverged


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def train_cli(tmp_path: Path, *extra: str) -> Any:
    return run_cli("train", "--data", "noise", *TINY_FLAGS, "--out", str(tmp_path / "o"), *extra)


# -- case 3: non-finite values never reach the weights --------------------------------------
@pytest.mark.parametrize(
    "flag, value",
    [
        ("--lr", "inf"),
        ("--optim.ema", "nan"),
        ("--loss.beta", "nan"),
        ("--model.obs_scale", "nan"),
        ("--loss.free_bits", "inf"),
        ("--optim.grad_clip", "nan"),
    ],
)
def test_case03_non_finite_options_are_refused_at_parse_time(
    tmp_path: Path, flag: str, value: str
) -> None:
    result = train_cli(tmp_path, flag, value)
    assert_clean_error(result, "must be a finite number")
    assert not (tmp_path / "o").exists()  # refused before a run directory was made


def test_case03_weights_that_overflow_stop_the_run_and_keep_the_last_good_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vaekit.training import step as step_module

    config = tiny_config(tmp_path / "run", **{"train.epochs": 3})
    vaekit.train(config)  # a good run to keep
    before = load_file(str(tmp_path / "run" / "model.safetensors"))
    original = step_module.Step.__call__

    def overflow(self: Any, *args: Any, **kwargs: Any) -> Any:
        record = original(self, *args, **kwargs)
        with torch.no_grad():  # a finite step that still overflows a weight
            next(iter(self.params)).fill_(float("inf"))
        return record

    monkeypatch.setattr(step_module.Step, "__call__", overflow)
    config.train.epochs = 6
    with pytest.raises(TrainingDiverged, match="no longer finite"):
        vaekit.train(config, resume=True)
    after = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    "command", [["sample", "--n", "4"], ["evaluate"], ["push", "a/b", "--dry-run"]]
)
def test_case03_non_finite_weights_are_refused_by_every_reader(
    run_copy: Path, command: list[str]
) -> None:
    path = run_copy / "model.safetensors"
    tensors = load_file(str(path))
    key = next(iter(tensors))
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    save_file(tensors, str(path))
    argv = [command[0], str(run_copy), *command[1:]]
    assert_clean_error(run_cli(*argv), "NaN or infinite values", key)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        vaekit.load(run_copy)


def test_case03_save_pretrained_refuses_non_finite_weights(tmp_path: Path) -> None:
    model = vaekit.VAE.from_config(ModelConfig(hidden=[8], latent_dim=2), (1, 8, 8))
    with torch.no_grad():
        model.mu_head.bias.fill_(float("nan"))
    with pytest.raises(CheckpointError, match="refusing to save non-finite weights"):
        model.save_pretrained(tmp_path / "m")
    assert not (tmp_path / "m" / "model.safetensors").exists()


# -- case 4: small inputs, huge requests --------------------------------------------------------
@pytest.mark.parametrize(
    "argv, needle",
    [
        (["sample", "--n", "100000000"], "argument --n: must be from 1 to 10,000"),
        (["interpolate", "--steps", "100000000"], "argument --steps: must be from 1 to 1,000"),
        (["interpolate", "--steps", "1e8"], "argument --steps: must be a whole number"),
        (["evaluate", "--iw-samples", "1000000000000"], "argument --iw-samples: must be from 0"),
    ],
)
def test_case04_huge_requests_are_refused_before_allocating(
    trained_run: Path, argv: list[str], needle: str
) -> None:
    assert_clean_error(run_cli(argv[0], str(trained_run), *argv[1:]), needle)


def test_case04_the_python_api_checks_what_a_request_needs(trained_run: Path) -> None:
    model = vaekit.load(trained_run)
    with pytest.raises(ConfigError, match=r"would need about [0-9.,]+ [KMGTP]iB of memory, more"):
        model.sample(10**9)
    x = torch.rand(100, 1, 28, 28)
    with pytest.raises(ConfigError, match="would need about"):
        model.interpolate(x, x, steps=10**7)
    with pytest.raises(ConfigError, match="iw_samples must be a whole number from 0 to"):
        vaekit.evaluate(model, x, iw_samples=10**12)
    torch.manual_seed(0)
    a = model.sample(4100, generator=torch.Generator().manual_seed(3))  # decoded in chunks
    b = model.sample(4100, generator=torch.Generator().manual_seed(3))
    assert a.shape == (4100, 1, 28, 28) and torch.equal(a, b)


def test_case04_a_config_json_asking_for_a_huge_model_is_refused_before_allocating(
    run_copy: Path,
) -> None:
    """latent_dim 10^9 allocated ~128 GB before any weight was compared."""
    meta = json.loads((run_copy / "config.json").read_text())
    meta["architecture"]["latent_dim"] = 10**9
    meta["architecture"]["decoder"]["args"]["in_features"] = 10**9
    (run_copy / "config.json").write_text(json.dumps(meta))
    result = run_cli("sample", str(run_copy), "--n", "4", memory=3 * 2**30)
    assert_clean_error(result, "parameters,", "would need about", "iB of memory")


# -- case 6: options that crashed -----------------------------------------------------------
@pytest.mark.parametrize(
    "flag, value, needle",
    [
        ("--train.threads", "100000", "must be >= 0 and <= 256"),  # a segfault
        ("--train.device", "mps", "vaekit trains on cpu, cuda, cuda:N or auto"),
        ("--train.device", "meta", "vaekit trains on cpu, cuda, cuda:N or auto"),
        ("--seed", "-1", "must be >= 0"),
        ("--seed", "nan", "must be an integer"),
        ("--seed", "1e23", "must be an integer"),
        ("--data.image_size", "1000000", "must be >= 8 and <= 1024"),
        ("--data.image_size", "1e6", "must be an integer"),
    ],
)
def test_case06_options_that_crashed_are_one_line(
    tmp_path: Path, flag: str, value: str, needle: str
) -> None:
    assert_clean_error(train_cli(tmp_path, flag, value), needle)


LADDER = ("--model.posterior", "ladder", "--model.latent_dims", "4,2")


@pytest.mark.parametrize(
    "flags, needle",
    [
        (("--model.posterior", "ladder", "--model.latent_dims", ",".join(["65536"] * 16)),
         "make model.latent_dims smaller"),
        ((*LADDER, "--model.arch", "conv", "--model.channels", "4", "--model.latent_channels",
          "2", "--model.conditional"), "set model.latent_channels 0"),  # labels with maps
        ((*LADDER, "--model.arch", "conv", "--model.channels", "4", "--model.linear_path",
          "--model.likelihood", "gaussian"), "model.posterior ladder does not take it"),
        ((*LADDER[:2], "--model.latent_dims", "4"), "2 to 16 layer sizes"),
        ((*LADDER, "--model.arch", "autoencoderkl"), "built for model.arch mlp and conv"),
        (("--model.posterior", "vq", "--model.latent_dims", "4,2"), "drop model.latent_dims"),
    ],
)  # fmt: skip
def test_case06_ladder_options_it_cannot_take_are_one_line(
    tmp_path: Path, flags: tuple[str, ...], needle: str
) -> None:
    argv = ["train", "--data", "noise", *TINY_FLAGS, "--out", str(tmp_path / "o"), *flags]
    assert_clean_error(run_cli(*argv, memory=4 * 2**30), needle)  # the harness's limit


def test_case06_a_ladder_trains_with_the_iwae_bound_and_free_bits(tmp_path: Path) -> None:
    result = train_cli(tmp_path, *LADDER, "--loss.iw_samples", "3")
    assert result.returncode == 0, result.stderr
    result = run_cli("train", "--data", "noise", *TINY_FLAGS, "--out", str(tmp_path / "fb"),
                     *LADDER, "--loss.free_bits", "0.5", "--loss.kl_warmup_steps", "2")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert math.isfinite(json.loads((tmp_path / "fb" / "metrics.jsonl").read_text())["val_kl_2"])


def test_case06_a_seed_of_1e23_from_a_yaml_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("train:\n  seed: 1.0e+23\n")
    with pytest.raises(ConfigError, match="train.seed' must be >= 0 and <= 9223372036854775807"):
        vaekit.load_config(str(tmp_path / "c.yaml"))


# the VQModel layout (issue 25: model.arch autoencoderkl with model.posterior vq), on its
# options' hostile values: each is a run or one line
VQMODEL = ["train", "--data", "noise", "--data.noise_examples", "32", "--model.arch",
           "autoencoderkl", "--model.posterior", "vq", "--model.channels", "8,16",
           "--model.latent_channels", "2", "--epochs", "1", "--batch-size", "16",
           "--train.progress", "false"]  # fmt: skip


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--model.codebook_size", "1048576", "--model.code_dim", "4096"], "would need about"),
        (["--model.linear_path", "true"], "model.linear_path needs model.arch conv"),
        (["--model.conditional", "true"], "model.conditional does not fit"),
        (["--model.likelihood", "bernoulli"], "not Bernoulli logits"),
        (["--model.learn_scale", "true"], "no per-pixel scales"),
        (["--model.blocks_per_level", "0"], "needs model.blocks_per_level >= 1"),
        (["--model.init", "diffusers:/no/such/folder"], "no such folder; point it"),
        (["--model.code_dim", "1"], None),  # codes of one value: a run
    ],
    ids=str,
)
def test_case06_the_vqmodel_layouts_options_run_or_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], needle: str | None
) -> None:
    from vaekit import cli

    pytest.importorskip("diffusers", reason="needs vaekit[diffusers]")
    code = cli.main([*VQMODEL, *flags, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    if needle is None:
        assert code == 0 and vaekit.load(tmp_path / "run").latent_shape == (1, 14, 14), err
    else:
        assert_one_line_error(code, err, needle)


# -- case 9: malformed run files --------------------------------------------------------------
@pytest.mark.parametrize(
    "key, value, needle",
    [
        ("input_shape", [-1, 28, 28], "input_shape must be (C, H, W)"),
        ("input_shape", [1, 28], "input_shape must be (C, H, W)"),
        ("num_classes", -5, "num_classes must be >= 0"),
    ],
)
def test_case09_an_edited_config_json_is_one_line(
    run_copy: Path, key: str, value: Any, needle: str
) -> None:
    meta = json.loads((run_copy / "config.json").read_text())
    meta["architecture"][key] = value
    (run_copy / "config.json").write_text(json.dumps(meta))
    assert_clean_error(run_cli("sample", str(run_copy), "--n", "4"), needle)


def test_case09_class_names_must_be_a_list_of_names(run_copy: Path) -> None:
    meta = json.loads((run_copy / "config.json").read_text())
    for value in ("abc", 5, [1, [2]]):
        meta["class_names"] = value
        (run_copy / "config.json").write_text(json.dumps(meta))
        with pytest.raises(CheckpointError, match="class_names"):
            vaekit.load(run_copy)


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda s: s.pop("optimizer"), "'optimizer' is missing or not a mapping"),
        (lambda s: s.update(epoch=-3), "'epoch' is -3, not a whole number >= 0"),
        (lambda s: s.update(epoch="x"), "'epoch' is 'x'"),
        (lambda s: s.update(step_in_epoch=10**9), "is at step 1000000000 of an epoch of 4"),
        (lambda s: s.update(rng={}), "does not fit this run's optimizer or generators"),
    ],
)
def test_case09_a_well_formed_state_pt_with_wrong_keys_is_one_line(
    tmp_path: Path, edit: Any, needle: str
) -> None:
    config = tiny_config(tmp_path / "run")
    vaekit.train(config)
    state_path = tmp_path / "run" / "state.pt"
    state = torch.load(state_path, weights_only=True)
    edit(state)
    torch.save(state, state_path)
    result = run_cli(
        "train", "--config", str(tmp_path / "run" / "config.yaml"), "--out",
        str(tmp_path / "run"), "--resume", "--epochs", "3", "--train.progress", "false",
    )  # fmt: skip
    assert_clean_error(result, needle)


@pytest.mark.parametrize("dtype", [torch.int8, torch.bool])
def test_case09_integer_or_bool_weights_are_refused(run_copy: Path, dtype: torch.dtype) -> None:
    path = run_copy / "model.safetensors"
    save_file({k: v.to(dtype) for k, v in load_file(str(path)).items()}, str(path))
    with pytest.raises(CheckpointError, match=f"{str(dtype)} in file, torch.float32 in model"):
        vaekit.load(run_copy)


@pytest.mark.parametrize(
    "content",
    [
        "garbage\n{not json\n",
        '{"epoch": 1, "train_nelbo": 1e308, "test_nelbo": -1e308}\n',
        '{"epoch": 1, "train_nelbo": NaN}\n[1, 2]\n',
    ],
)
def test_case09_a_garbage_or_extreme_metrics_log_does_not_break_its_readers(
    run_copy: Path, content: str
) -> None:
    (run_copy / "metrics.jsonl").write_text(content)
    for argv in (["curves", str(run_copy)], ["push", str(run_copy), "a/b", "--dry-run",
                 "--no-evaluate"], ["report", str(run_copy), "--iw-samples", "0",
                 "--max-test", "8"]):  # fmt: skip
        result = run_cli(*argv)
        assert "Traceback" not in result.stderr, result.stderr
        if result.returncode:
            assert_clean_error(result, "no training curves")


def test_case09_deep_yaml_and_duplicate_keys_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "deep.yaml").write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    (tmp_path / "dup.yaml").write_text("train:\n  epochs: 2\n  epochs: 3\n")
    assert_clean_error(
        run_cli("train", "--config", str(tmp_path / "deep.yaml")), "nested too deeply"
    )
    assert_clean_error(
        run_cli("train", "--config", str(tmp_path / "dup.yaml")),
        "key 'epochs' appears twice (line 3)",
    )


# -- case 10: the Python API --------------------------------------------------------------------
def test_case10_the_python_api_takes_arrays_and_refuses_what_it_cannot_use(
    trained_run: Path,
) -> None:
    model = vaekit.load(trained_run)
    x = np.random.default_rng(0).random((8, 1, 28, 28)).astype(np.float32)
    stats = vaekit.evaluate(model, x)  # a numpy array, as the docs say
    assert stats["n"] == 8 and math.isfinite(stats["nelbo"])
    for call, error, needle in (
        (lambda: vaekit.evaluate(model, x, batch_size=-1), ConfigError, "batch_size must be"),
        (lambda: vaekit.evaluate(model, x[:0]), DataError, "no images to evaluate"),
        (lambda: vaekit.evaluate(model, "x"), DataError, "tensor or numpy array"),
        (lambda: vaekit.load(None), ConfigError, "not NoneType"),
        (lambda: vaekit.train({}), ConfigError, "takes a vaekit.Config"),
        (lambda: model.sample(-1), ConfigError, "n must be a whole number >= 0"),
        (lambda: model.interpolate(x[0], x[1], steps=0), ConfigError, "steps must be"),
    ):
        with pytest.raises(error, match=needle):
            call()


# -- case 11: a resume on other data ----------------------------------------------------------
def test_case11_resuming_on_data_of_the_same_shape_but_other_content_is_refused(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    np.savez(data, x_train=rng.integers(0, 256, (128, 8, 8), dtype=np.uint8))
    config = tiny_config(tmp_path / "run", **{"data.name": str(data)})
    vaekit.train(config)
    np.savez(data, x_train=rng.integers(0, 256, (128, 8, 8), dtype=np.uint8))  # swapped
    config.train.epochs = 2
    with pytest.raises(ConfigError, match="the training data differ from the data the run"):
        vaekit.train(config, resume=True)


# -- the first run ----------------------------------------------------------------------------
def test_progress_bars_show_only_on_a_terminal(tmp_path: Path) -> None:
    """Redirected to a file, training wrote every bar refresh as a \\r-separated line."""
    result = run_cli(
        "train", "--data", "noise", "--data.noise_examples", "2048", "--model.hidden", "32",
        "--epochs", "2", "--batch-size", "32", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "step/s" not in result.stderr
    assert result.stderr.count("epoch 1/2: train -ELBO") == 1  # one line per epoch
    assert result.stderr.count("epoch 2/2: train -ELBO") == 1


def test_make_demo_installs_only_what_the_demo_needs() -> None:
    """The demo's venv installs the package and its core dependencies, not the test tools."""

    def plan(target: str) -> str:
        make = ["make", "-n", target, "VENV=/nonexistent-venv"]
        return subprocess.run(make, cwd=ROOT, capture_output=True, text=True, check=True).stdout

    installs = [line for line in plan("demo").splitlines() if "pip install" in line]
    assert installs and not any("[dev]" in line or "pytest" in line for line in installs)
    assert any("[dev]" in line for line in plan("test").splitlines())


# -- loss.objective: the combinations an objective refuses, through the CLI ------------------
@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--loss.objective", "tcvae", "--model.posterior", "vq"], "needs a posterior with a"),
        (["--loss.objective", "wae_mmd", "--loss.free_bits", "0.5"], "no per-dimension KL"),
        (["--loss.objective", "infovae", "--loss.beta", "4"], "loss.mmd_weight or info_alpha"),
        (["--loss.objective", "factorvae", "--loss.iw_samples", "8"], "loss.iw_samples at 1"),
    ],
)
def test_objective_combinations_that_cannot_work_are_one_line(
    tmp_path: Path, extra: list[str], needle: str
) -> None:
    assert_clean_error(train_cli(tmp_path, *extra), needle)
