"""Bringing your own model: the registry, the protocol's errors, the Trainer's API and
callbacks, loading that never executes code named by a file, and the Hub methods."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
import torch
from torch import nn

import custom_arch
import vaekit
from conftest import assert_clean_error, run_cli, tiny_config, write_hub_cache
from vaekit.errors import CheckpointError, ConfigError
from vaekit.models import registry

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def custom_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("custom") / "run"
    return vaekit.Trainer(custom_arch.conv_vae(), tiny_config(out)).fit().run_dir


# -- loading never runs code named by a file ---------------------------------------------------
@pytest.mark.parametrize(
    "name", ["not-registered", "os.system", "subprocess:Popen", "builtins.exec\nsecond line"]
)
def test_an_unregistered_architecture_is_refused_without_importing_anything(
    custom_run: Path, tmp_path: Path, name: str
) -> None:
    folder = Path(shutil.copytree(custom_run, tmp_path / "copy"))
    meta = json.loads((folder / "config.json").read_text())
    meta["architecture"]["encoder"] = {"name": name, "args": {"command": "touch pwned"}}
    (folder / "config.json").write_text(json.dumps(meta))
    vaekit.load(custom_run)  # torch's own lazy imports of a load happen here, not below
    modules = set(sys.modules)
    with pytest.raises(CheckpointError) as error:
        vaekit.load(folder)
    message = str(error.value)
    assert "\n" not in message and "is not registered in this process" in message
    assert "@vaekit.register(" in message and "--import MODULE" in message
    assert set(sys.modules) == modules  # nothing was imported to look the name up
    assert not Path("pwned").exists() and not (tmp_path / "pwned").exists()


def test_the_cli_refuses_an_unregistered_model_in_one_line_and_imports_it_when_told(
    custom_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "samples.png"
    result = run_cli("sample", str(custom_run), "--out", str(out))
    assert_clean_error(result, "'test-conv-encoder' is not registered", "--import")
    assert not out.exists()
    env = {"PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'tests'}"}
    result = run_cli(
        "--import", "custom_arch", "sample", str(custom_run), "--out", str(out), env=env
    )
    assert result.returncode == 0, result.stderr
    assert out.is_file()
    # a resume from the command line rebuilds the saved architecture through the registry
    config = custom_run / "config.yaml"
    args = ["train", "--config", str(config), "--out", str(custom_run), "--resume", "--epochs", "2"]
    result = run_cli("--import", "custom_arch", *args, env=env)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (custom_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert_clean_error(run_cli("--import", "no_such_module_here", "presets"), "cannot be imported")
    assert_clean_error(run_cli("--import", "os;rm", "presets"), "is not a module name")


# -- the registry ---------------------------------------------------------------------------
def test_registry_names_and_arguments_are_checked() -> None:
    with pytest.raises(ConfigError, match="not valid"):
        vaekit.register("Has Spaces")
    with pytest.raises(TypeError, match="nn.Module"):
        vaekit.register("plain-class")(object)
    with pytest.raises(ConfigError, match="already registered to"):

        @vaekit.register("test-conv-encoder")
        class Impostor(nn.Module):
            pass

    @vaekit.register("test-takes-a-module")
    class TakesAModule(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x)

    encoder = TakesAModule(nn.Flatten())  # nn.Flatten is not registered: config.json can't name it
    model = vaekit.VAE(encoder, custom_arch.ConvPixels(), latent_dim=4, input_shape=(1, 28, 28))
    with pytest.raises(ConfigError, match="the module Flatten as its argument 'inner'"):
        model.architecture()
    encoder = TakesAModule(inner={"a": object()})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not plain JSON"):
        registry.spec(encoder, "encoder")
    assert registry.spec(custom_arch.ConvPixels(latent_dim=3), "decoder") == {
        "name": "test-conv-decoder",
        "args": {"latent_dim": 3, "channels": 1, "width": 8},
    }


def test_an_unregistered_class_saves_its_weights_and_loads_when_handed_over(
    tmp_path: Path,
) -> None:
    class Unregistered(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 8))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    model = vaekit.VAE(
        Unregistered(), custom_arch.ConvPixels(), latent_dim=4, input_shape=(1, 28, 28)
    )
    folder = model.save_pretrained(tmp_path / "m")
    with pytest.raises(CheckpointError, match=r"the encoder is .*Unregistered, not registered"):
        vaekit.load(folder)
    loaded = vaekit.load(folder, encoder=Unregistered())
    assert torch.equal(loaded.encoder.net[1].weight, model.encoder.net[1].weight)


# -- the protocol's errors --------------------------------------------------------------------
def test_an_encoder_or_decoder_outside_the_protocol_is_one_clear_error() -> None:
    class ThreeOutputs(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return x, x, x

    def vae(encoder: nn.Module | None = None, **settings: Any) -> vaekit.VAE:
        kwargs = {"latent_dim": 4, "input_shape": (1, 28, 28), **settings}
        return vaekit.VAE(encoder or custom_arch.ConvFeatures(), custom_arch.ConvPixels(), **kwargs)

    for make, needle in (
        (lambda: vae(ThreeOutputs()), "returns features \\(B, F\\) or a pair"),
        (
            lambda: vae(custom_arch.ConvFeatures(channels=3), input_shape=(3, 28, 28)),
            r"needs parameters \(1, 3, 28, 28\)",
        ),
        (lambda: vae(latent_dim=5), "failed on a latent of 5"),
        (lambda: vae(likelihood="poisson"), "likelihood must be one of"),
        (lambda: vae(input_shape=(28, 28)), "input_shape must be"),
    ):
        with pytest.raises(ConfigError, match=needle):
            make()


def test_the_encoder_probe_leaves_training_flags_as_they_were() -> None:
    encoder = custom_arch.ConvFeatures()
    encoder.net[0].eval()  # a submodule the user froze on purpose
    vaekit.VAE(encoder, custom_arch.ConvPixels(), latent_dim=4, input_shape=(1, 28, 28))
    assert encoder.training and not encoder.net[0].training and encoder.net[1].training


# -- the Trainer -------------------------------------------------------------------------------
def test_a_function_callback_stops_after_an_epoch(tmp_path: Path) -> None:
    seen: list[int] = []

    def stop_after_first(record: dict[str, Any]) -> bool:
        seen.append(record["epoch"])
        return record["epoch"] >= 1

    config = tiny_config(tmp_path / "run", **{"train.epochs": 5})
    result = vaekit.Trainer(custom_arch.conv_vae(), config, callbacks=[stop_after_first]).fit()
    assert seen == [1] and result.stopped_early
    assert [r["epoch"] for r in result.history] == [1]
    lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and "val_nelbo" in result.history[0]


def test_a_step_callback_stops_mid_epoch_and_the_run_resumes_there(tmp_path: Path) -> None:
    class StopAtStep(vaekit.Callback):
        def __init__(self, at: int) -> None:
            self.at, self.steps = at, []

        def on_step_end(self, trainer: vaekit.Trainer) -> None:
            self.steps.append(trainer.state.global_step)
            if trainer.state.global_step == self.at:
                trainer.stop()

    full = tiny_config(tmp_path / "full", **{"train.epochs": 2})
    vaekit.Trainer(None, full).fit()
    config = tiny_config(tmp_path / "part", **{"train.epochs": 2})
    callback = StopAtStep(6)  # 4 steps an epoch: stop at epoch 2, step 2
    result = vaekit.Trainer(None, config, callbacks=[callback]).fit()
    assert callback.steps == [1, 2, 3, 4, 5, 6] and result.stopped_early
    assert [r["epoch"] for r in result.history] == [1]
    state = torch.load(result.run_dir / "state.pt", weights_only=True)
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 2, 6)
    vaekit.Trainer(None, config, resume=True).fit()
    a = vaekit.load(tmp_path / "full").state_dict()
    b = vaekit.load(tmp_path / "part").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_trainer_refuses_what_it_cannot_train(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="takes a vaekit.VAE"):
        vaekit.Trainer(nn.Linear(2, 2), tiny_config(tmp_path / "a"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="takes a vaekit.Config"):
        vaekit.Trainer(None, {"train.epochs": 1})  # type: ignore[arg-type]
    rgb = vaekit.VAE(
        custom_arch.ConvFeatures(channels=3),
        custom_arch.ConvPixels(channels=3),
        latent_dim=4,
        input_shape=(3, 28, 28),
    )
    with pytest.raises(vaekit.VaekitError, match=r"images of shape \(1, 28, 28\) but the model"):
        vaekit.Trainer(rgb, tiny_config(tmp_path / "b")).fit()
    with pytest.raises(RuntimeError, match="call fit"):
        _ = vaekit.Trainer(None, tiny_config(tmp_path / "c")).shown


def test_resuming_with_another_architecture_is_refused(custom_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(custom_run, tmp_path / "run"))
    config = vaekit.load_config(
        str(run / "config.yaml"), {"train.out": str(run), "train.epochs": 3}
    )
    with pytest.raises(ConfigError, match="the model differs from the one the run"):
        vaekit.Trainer(custom_arch.direct_vae(), config, resume=True).fit()


# -- the Hub methods -------------------------------------------------------------------------
def test_push_to_hub_dry_run_builds_the_folder_and_a_card(custom_run: Path) -> None:
    model = vaekit.load(custom_run)
    plan = model.push_to_hub("alice/my-conv-vae", dry_run=True)
    assert set(plan.files) == {"config.json", "model.safetensors", "README.md"}
    card = huggingface_hub.ModelCard(plan.files["README.md"].decode())  # type: ignore[union-attr]
    assert card.data.library_name == "vaekit"
    assert "`test-conv-encoder`, `test-conv-decoder`" in card.text and "register" in card.text
    meta = json.loads(plan.files["config.json"])  # type: ignore[arg-type]
    assert meta["architecture"] == model.architecture() and "config" in meta
    with pytest.raises(ConfigError, match="not a Hub repo id"):
        model.push_to_hub("no-owner", dry_run=True)


def test_push_to_hub_uploads_one_commit_through_the_client(
    custom_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: dict[str, Any] = {}

    def create_repo(self: Any, repo_id: str, **kwargs: Any) -> str:
        sent["repo"] = (repo_id, kwargs["private"])
        return f"https://huggingface.co/{repo_id}"

    def create_commit(self: Any, repo_id: str, operations: Any, **kwargs: Any) -> Any:
        files = {}
        for op in operations:
            with op.as_file() as f:
                files[op.path_in_repo] = f.read()
        sent["files"], sent["message"] = files, kwargs["commit_message"]
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/1"})

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", create_commit)
    model = vaekit.load(custom_run)
    plan = model.push_to_hub("alice/my-conv-vae", private=True, commit_message="first")
    assert sent["repo"] == ("alice/my-conv-vae", True) and sent["message"] == "first"
    assert sent["files"] == plan.files and plan.url.endswith("/commit/1")
    assert sent["files"]["model.safetensors"] == (custom_run / "model.safetensors").read_bytes()


def test_from_pretrained_takes_a_repo_id_and_refuses_an_unregistered_one(
    custom_run: Path, offline_cache: Path
) -> None:
    files = {f: (custom_run / f).read_bytes() for f in ("config.json", "model.safetensors")}
    write_hub_cache(offline_cache, "alice/custom", files)
    model = vaekit.VAE.from_pretrained("alice/custom")
    assert model.architecture() == vaekit.load(custom_run).architecture()
    meta = json.loads(files["config.json"])
    meta["architecture"]["decoder"]["name"] = "someone-elses-decoder"
    write_hub_cache(
        offline_cache, "alice/other", {**files, "config.json": json.dumps(meta).encode()}
    )
    with pytest.raises(CheckpointError, match="'someone-elses-decoder' is not registered"):
        vaekit.VAE.from_pretrained("alice/other")


# -- what a review of the redesign found ----------------------------------------------------
def test_an_interrupt_counts_the_skipped_steps_before_it_saves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Steps 2 and 4 are non-finite, SIGINT arrives during step 6: state.pt says 2 skipped
    (the records of the last steps are read before saving, not lost)."""
    import os
    import signal

    from vaekit.errors import TrainingInterrupted
    from vaekit.training import objective

    original, calls = objective.compute, []

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        terms = original(*args, **kwargs)
        if len(calls) in (2, 4):
            terms.loss = terms.loss * float("nan")
        if len(calls) == 6:
            os.kill(os.getpid(), signal.SIGINT)  # the handler only sets a flag
        return terms

    monkeypatch.setattr(objective, "compute", spy)
    config = tiny_config(tmp_path / "run", **{"train.epochs": 2})
    with pytest.raises(TrainingInterrupted):
        vaekit.Trainer(None, config).fit()
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    assert (state["global_step"], state["skipped_updates"]) == (6, 2)


def test_a_registered_subclass_without_its_own_init_records_its_arguments(
    tmp_path: Path,
) -> None:
    @vaekit.register("test-wide-features")
    class Wide(custom_arch.ConvFeatures):
        pass

    model = vaekit.VAE(
        Wide(width=4), custom_arch.ConvPixels(), latent_dim=4, input_shape=(1, 28, 28)
    )
    assert model.architecture()["encoder"] == {
        "name": "test-wide-features",
        "args": {"channels": 1, "width": 4},
    }
    loaded = vaekit.VAE.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert loaded.encoder.net[0].out_channels == 4


def test_a_class_defined_again_saves_models_built_before() -> None:
    """A notebook cell run twice defines the class anew; models of the first still save."""
    source = (
        "import vaekit\nfrom torch import nn\n"
        "@vaekit.register('test-redefined')\n"
        "class Enc(nn.Module):\n"
        "    def __init__(self):\n        super().__init__(); self.f = nn.Flatten()\n"
        "    def forward(self, x):\n        return self.f(x)\n"
    )
    first: dict[str, Any] = {"__name__": "notebook"}
    exec(source, first)
    encoder = first["Enc"]()
    exec(source, {"__name__": "notebook"})  # the same cell again
    model = vaekit.VAE(encoder, custom_arch.ConvPixels(), latent_dim=4, input_shape=(1, 28, 28))
    assert model.architecture()["encoder"]["name"] == "test-redefined"


def test_the_trainer_refuses_bad_arguments_before_it_trains(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "run")
    for callbacks, needle in (
        (lambda r: None, "takes a list"),
        ([1], "neither a vaekit.Callback"),
        ([vaekit.Callback], "the class Callback"),
    ):
        with pytest.raises(ConfigError, match=needle):
            vaekit.Trainer(None, config, callbacks=callbacks)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="takes a vaekit.data.Dataset"):
        vaekit.Trainer(None, config, data="mnist")  # type: ignore[arg-type]
    assert not (tmp_path / "run").exists()  # nothing was started


def test_an_encoder_whose_out_features_lie_is_refused() -> None:
    encoder = custom_arch.ConvFeatures()
    encoder.out_features = 32  # it returns 8 * 7 * 7 = 392
    with pytest.raises(ConfigError, match="declares out_features 32 but returned features"):
        vaekit.VAE(encoder, custom_arch.ConvPixels(), latent_dim=4, input_shape=(1, 28, 28))


def test_the_trained_model_knows_its_config_and_class_names(tmp_path: Path) -> None:
    result = vaekit.Trainer(custom_arch.conv_vae(), tiny_config(tmp_path / "run")).fit()
    assert result.model.training_config().train.out == str(tmp_path / "run")
    assert result.model.class_names == [str(i) for i in range(10)]
    assert all(p.requires_grad for p in result.model.parameters())
    assert (
        vaekit.VAE(
            custom_arch.ConvFeatures(),
            custom_arch.ConvPixels(),
            latent_dim=4,
            input_shape=(1, 28, 28),
        ).run_config
        is None
    )
    header = (tmp_path / "run" / "config.yaml").read_text().splitlines()[0]
    assert header.startswith("# The model is test-conv-encoder + test-conv-decoder")


@pytest.mark.parametrize(
    "edit, needle",
    [
        ({"activation": "nope"}, "cannot be built from its recorded arguments"),
        ({"hidden": []}, "cannot be built from its recorded arguments"),
        ({"hidden": [-3]}, "cannot be built from its recorded arguments"),
    ],
)
def test_a_config_json_that_cannot_build_is_one_line(
    trained_run: Path, tmp_path: Path, edit: dict[str, Any], needle: str
) -> None:
    folder = Path(shutil.copytree(trained_run, tmp_path / "copy"))
    meta = json.loads((folder / "config.json").read_text())
    meta["architecture"]["encoder"]["args"].update(edit)
    (folder / "config.json").write_text(json.dumps(meta))
    assert_clean_error(run_cli("sample", str(folder), "--out", str(tmp_path / "s.png")), needle)


def test_from_pretrained_says_what_it_tried(tmp_path: Path, offline_cache: Path) -> None:
    with pytest.raises(CheckpointError, match="runs/nope is no local folder, and as a Hub repo id"):
        vaekit.VAE.from_pretrained("runs/nope")
    with pytest.raises(ConfigError, match="not NoneType"):
        vaekit.VAE.from_pretrained(None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not a Hub repo id"):
        custom_arch.conv_vae().push_to_hub(None, dry_run=True)  # type: ignore[arg-type]


def test_an_imported_module_that_fails_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken_models.py").write_text("x = 1\nundefined_name\n")
    result = run_cli("--import", "broken_models", "presets", cwd=tmp_path)
    assert_clean_error(result, "the module failed (NameError", "broken_models.py:2")
