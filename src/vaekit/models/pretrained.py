"""A model as files: `Pretrained`, the base class of a model whose settings are recorded
(record.py), builds one from a config's `model` section (`from_config`), writes its record
for config.json (`architecture`) and rebuilds it from that record (`from_architecture`),
and saves and loads it the Hugging Face way: `save_pretrained`, `from_pretrained`,
`push_to_hub`; `resolve` finds the folder that `load` (vae.py) reads (a run directory, a
model folder or `hf://OWNER/NAME`).

The same behaviour as huggingface_hub's PyTorchModelHubMixin (whose config.json records
constructor arguments, which for a VAE are modules, not JSON), written here so that the
core installs without the Hub client: config.json records the architecture through the
registry (registry.py) and the weights are safetensors. Loading is strict: the weights
must fit the recorded architecture exactly, checked before any weight is copied.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from ..config import Config, ModelConfig
from ..devices import check_device
from ..errors import CheckpointError, ConfigError, DataError, first_line
from ..io import card, checkpoint, hub
from ..version import __version__
from . import builtin, protocol, record, registry
from .composition import PRIOR, STANDARD, model_class

P = TypeVar("P", bound="Pretrained")
# the models of a posterior other than the Gaussian, by the name config.json's
# architecture records under POSTERIOR (and model.posterior): filled by their modules
# (vqvae.py, hierarchical.py)
POSTERIORS: dict[str, type[Pretrained]] = {}
POSTERIOR, GAUSSIAN = "posterior", "gaussian"


def posterior_class(cls: type[P], name: Any, source: str) -> type[P]:
    """The class to build for a posterior's name: `cls` itself for the Gaussian, else the
    registered subclass of `cls`, or a CheckpointError naming what is wrong."""
    if name == GAUSSIAN:
        return cls
    model = POSTERIORS.get(name) if isinstance(name, str) else None
    if model is None or not issubclass(model, cls):
        known = ", ".join([GAUSSIAN, *sorted(POSTERIORS)])
        raise CheckpointError(f"{source}: unknown posterior {name!r} (known: {known})")
    return model


def resolve(path: str | Path, *, revision: str | None = None, repo_ids: bool = False) -> Path:
    """A local folder for `path`: itself, or the Hub snapshot of `hf://OWNER/NAME[@REV]`
    (with `repo_ids`, also of a bare OWNER/NAME that is no local path)."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(
            f"a model is loaded from a folder path or a Hub repo id, not {type(path).__name__}"
        )
    text = str(path)
    suffix = ""
    if revision is not None:  # checked here too: joined below, it could hide an "@" or ".."
        suffix = "@" + hub.check_revision(revision)
        if text.startswith("hf://") and "@" in text:
            raise ConfigError(f"{text!r} names a revision after @ already; drop revision=")
    if text.startswith("hf://"):
        return hub.download(text + suffix)
    if repo_ids and not Path(text).exists() and hub.looks_like_repo_id(text):
        try:
            return hub.download(f"hf://{text}{suffix}")
        except CheckpointError as e:
            raise CheckpointError(f"{text} is no local folder, and as a Hub repo id: {e}") from None
    return checkpoint.local_dir(path)


class Pretrained(record.Recorded, nn.Module):
    """The base class of `VAE` (see models/vae.py): from_config / architecture /
    from_architecture, and save_pretrained / from_pretrained / push_to_hub, for any model
    whose settings are recorded (record.Recorded): its constructor's arguments."""

    input_shape: tuple[int, int, int]  # (C, H, W) of the data it reads (a setting)
    # the posterior's kind (config.json names one other than the Gaussian), whether the
    # model has a density p(x) (an ELBO, log p(x), samples from its prior: a VQ-VAE has
    # none), and the names of the objective's terms (ELBOTerms' nelbo, recon, kl) in the
    # training and validation records (train_nelbo, val_kl, ...)
    posterior_kind = GAUSSIAN
    has_density = True
    term_names = ("nelbo", "recon", "kl")
    # the priors the posterior composes with (composition.py); whether the KL is the closed
    # form, split by latent dimension (free bits, KL per dimension), or else why not
    priors: tuple[str, ...] = (STANDARD,)
    closed_form_kl = True
    no_kl_per_dim = ""

    def __init__(self) -> None:
        """What a model knows of the run that trained it, once trained or loaded."""
        super().__init__()
        self.run_config: Config | None = None  # that run's configuration
        self.class_names: list[str] = []  # the dataset's label names, if any
        self.column_names: list[str] = []  # a table model's: its training table's columns
        self.data_source: dict[str, Any] | None = None  # where its data came from

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return next(self.parameters()).device

    # -- the prior p(z) -------------------------------------------------------------------
    @property
    def has_prior(self) -> bool:
        """Whether the model has a prior to sample from: N(0, I) always; a VQ-VAE once a
        prior over its codes is trained (vqvae.py)."""
        return True

    def read_prior(self, folder: Path) -> None:
        """Read the prior a model keeps beside its weights in `folder`: none for N(0, I)."""

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_config(
        cls: type[P],
        cfg: ModelConfig,
        input_shape: Sequence[int],
        num_classes: int = 0,
        normalization: dict[str, Any] | None = None,
    ) -> P:
        """The built-in MLP, conv or autoencoderkl VAE that `cfg` (the config's `model`
        section) describes, started from model.init's weights where it names some;
        `num_classes` counts only when `cfg.conditional`; `normalization` is a
        `Normalization.record()` of the data (see `builtin.build`); model.posterior picks
        the class (a subclass of `cls`: `VQVAE` for vq)."""
        built = builtin.build(cfg, input_shape, num_classes, normalization)
        model = posterior_class(cls, cfg.posterior, "model.posterior")
        return built.model(model_class(cls, model, cfg.posterior, cfg.prior, "model.prior"))

    def architecture(self) -> dict[str, Any]:
        """What config.json records to rebuild this model: its settings (`settings()`), a
        module as a registered name and its JSON arguments, and the posterior's kind where
        it is not the Gaussian (`posterior`: which class `from_architecture` builds)."""
        spec = {
            name: registry.spec(value, name)
            if isinstance(value, nn.Module)
            else record.as_json(value)
            for name, value in self.settings().items()
        }
        if self.posterior_kind != GAUSSIAN:  # the Gaussian's files stay as they were
            spec[POSTERIOR] = self.posterior_kind
        return spec

    @classmethod
    def from_architecture(
        cls: type[P],
        architecture: dict[str, Any],
        source: str = "config.json",
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
    ) -> P:
        """A freshly initialised model from an `architecture()` record, through the registry
        only (never an import named by the record); `encoder`, `decoder`: the halves, built
        by the caller, where the record names classes that are not registered (or to use
        instead of the registered ones: of the same class)."""
        if not isinstance(architecture, dict):
            raise CheckpointError(f"{source}: 'architecture' must be an object")
        given = {"encoder": encoder, "decoder": decoder}
        _check_given(architecture, given, source)
        required = [k for k in cls.required_settings if k in cls.recorded_settings]
        missing = [k for k in required if architecture.get(k) is None]
        if missing:
            raise CheckpointError(f"{source}: 'architecture' lacks {', '.join(missing)}")
        posterior = architecture.get(POSTERIOR, GAUSSIAN)
        model = posterior_class(cls, posterior, source)
        cls = model_class(cls, model, posterior, architecture.get(PRIOR, STANDARD), source)
        kwargs = {
            k: architecture[k]
            for k in cls.recorded_settings
            if k not in cls.module_settings and architecture.get(k) is not None
        }

        def build(role: str) -> nn.Module:
            module = given.get(role)
            return (
                registry.build(architecture.get(role), role, source) if module is None else module
            )

        latent = kwargs.get("latent_dim")
        latent = latent if isinstance(latent, int) else 1
        protocol.check_size(
            lambda: (build("encoder"), build("decoder")),
            latent,
            f"the architecture {source} records",
        )
        modules = {role: build(role) for role in cls.module_settings}  # a family's too
        halves = modules.pop("encoder"), modules.pop("decoder")
        try:
            return record.Built(*halves, {**modules, **kwargs}).model(cls)
        except Exception as e:  # anything a recorded setting can make the constructor raise
            raise CheckpointError(
                f"{source}: the architecture cannot be built ({first_line(e)})"
            ) from None

    def custom_architectures(self) -> list[str]:
        """The registered names (a class that is not registered: its name) of this model's
        halves that are not vaekit's own."""
        return [
            registry.registered_name(m) or type(m).__name__
            for m in self.settings().values()
            if isinstance(m, nn.Module) and not type(m).__module__.startswith("vaekit.")
        ]

    def training_config(self) -> Config:
        """The configuration of the run that trained this model (its data, split, seed), or
        a clear error for a folder saved without one."""
        if self.run_config is None:
            raise DataError(
                "this model's config.json records no training configuration, so its data "
                "and test split are unknown; save it with save_pretrained(dir, config=...) "
                "or evaluate it from Python with vaekit.evaluate(model, images)"
            )
        return self.run_config

    # -- saving ---------------------------------------------------------------------------
    def _meta(self, config: Config | None, class_names: list[str] | None) -> dict[str, Any]:
        config = config if config is not None else self.run_config
        names = class_names if class_names is not None else self.class_names
        meta: dict[str, Any] = {
            "library_name": "vaekit",
            "vaekit_version": __version__,
            "architecture": self.architecture(),
            "class_names": [str(n) for n in names],
        }
        if self.column_names:
            meta["column_names"] = [str(n) for n in self.column_names]
        if config is not None:
            meta["config"] = config.to_dict()
        if self.data_source is not None:
            meta["data_source"] = dict(self.data_source)
        return meta

    def save_pretrained(
        self,
        save_directory: str | Path,
        *,
        config: Config | None = None,
        class_names: list[str] | None = None,
    ) -> Path:
        """Write config.json + model.safetensors into `save_directory` (atomically, weights
        first). `config` (default: the model's `run_config`) is the training configuration
        recorded beside the architecture."""
        directory = Path(save_directory)
        checkpoint.write_model_folder(directory, self.state_dict(), self._meta(config, class_names))
        return directory

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def from_folder(
        cls: type[P],
        folder: Path,
        device: str | torch.device = "cpu",
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
    ) -> P:
        """The model in a local model folder, strictly: architecture from config.json
        through the registry (or the `encoder` and `decoder` given), then the weights,
        compared before any is copied."""
        device = check_device(device)
        meta = checkpoint.read_meta(folder)
        source = str(folder / checkpoint.CONFIG_FILE)
        config: Config | None = meta["config"]
        if "architecture" in meta:
            model = cls.from_architecture(meta["architecture"], source, encoder, decoder)
        else:  # written by vaekit 0.1: the built-in architecture its config describes,
            assert config is not None  # whose conv decoder could only be GroupNorm's
            legacy = dataclasses.replace(config.model, decoder_norm="group")
            model = cls.from_config(legacy, meta["input_shape"], meta["num_classes"])
        tensors = checkpoint.read_weights(folder)
        checkpoint.check_state_dict(model, tensors, str(folder / checkpoint.MODEL_FILE))
        model.load_state_dict(tensors, strict=True)
        model.read_prior(folder)
        model.run_config = config
        model.class_names = list(meta["class_names"])
        data_source = meta.get("data_source")  # absent before vaekit 0.3
        if data_source is not None and not isinstance(data_source, dict):
            raise CheckpointError(f"{source}: 'data_source' must be an object")
        model.data_source = data_source
        columns = meta.get("column_names", [])
        if isinstance(columns, list) and len(columns) == model.input_shape[0]:
            model.column_names = [str(c) for c in columns]
        return model.to(device).eval()

    @classmethod
    def from_pretrained(
        cls: type[P],
        path_or_repo_id: str | Path,
        *,
        revision: str | None = None,
        device: str | torch.device = "cpu",
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
    ) -> P:
        """A model from a local folder (a run directory or a `save_pretrained` folder), a
        Hub repo id `OWNER/NAME` or `hf://OWNER/NAME` (needs vaekit[hub]; `revision` is a
        branch, tag or commit). Its architecture must be registered in this process, or
        its halves handed over built (`encoder=`, `decoder=`: a model whose classes were
        not registered needs them), the weights checked strictly against them."""
        check_device(device)  # before a download
        folder = resolve(path_or_repo_id, revision=revision, repo_ids=True)
        return cls.from_folder(folder, device, encoder, decoder)

    # -- sharing --------------------------------------------------------------------------
    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool = False,
        commit_message: str | None = None,
        config: Config | None = None,
        dry_run: bool = False,
    ) -> hub.PushPlan:
        """Upload config.json, model.safetensors and a model card to the Hub repo `repo_id`
        in one commit (needs vaekit[hub] and `hf auth login` or HF_TOKEN); `dry_run`
        builds the same files and sends nothing. Returns what was (or would be) sent.

        `vaekit push RUN` sends a run with its evaluation and images instead."""
        hub.check_repo_id(repo_id)
        meta = self._meta(config, None)
        plan = hub.PushPlan(repo_id)
        with tempfile.TemporaryDirectory() as tmp:  # the bytes save_pretrained writes
            folder = self.save_pretrained(tmp, config=config)
            plan.files[checkpoint.CONFIG_FILE] = (folder / checkpoint.CONFIG_FILE).read_bytes()
            plan.files[checkpoint.MODEL_FILE] = (folder / checkpoint.MODEL_FILE).read_bytes()
        plan.files[hub.CARD_FILE] = card.model_card(
            repo_id,
            architecture=meta["architecture"],
            parameters=sum(p.numel() for p in self.parameters()),
            class_names=meta["class_names"],
            config=config if config is not None else self.run_config,
            custom=self.custom_architectures(),
        ).encode("utf-8")
        if not dry_run:
            hub.upload(plan, private=private, message=commit_message)
        return plan


def _same_class(recorded: object, given: object) -> bool:
    """A class a script defines is `__main__.X` there and `script.X` where it is imported
    (or the other way round): the two name one class, whose weights are then checked."""
    if recorded == given or not isinstance(recorded, str) or not isinstance(given, str):
        return recorded == given
    main = "__main__."
    for script, other in ((recorded, given), (given, recorded)):
        if script.startswith(main) and other.endswith("." + script[len(main) :]):
            return True
    return False


def _check_given(
    architecture: dict[str, Any], given: dict[str, nn.Module | None], source: str
) -> None:
    """The halves a caller hands over must be modules of the classes the record names; the
    halves recorded by an unregistered class must be handed over (one line names them)."""
    missing = []
    for role, module in given.items():
        entry = architecture.get(role)
        recorded = entry.get("class") or entry.get("name") if isinstance(entry, dict) else None
        if module is None:
            if isinstance(entry, dict) and "name" not in entry and "class" in entry:
                missing.append((role, str(entry["class"])[:120]))
            continue
        if not isinstance(module, nn.Module):
            raise ConfigError(f"{role}= takes an nn.Module, not {type(module).__name__}")
        mine = registry.spec(module, role)
        if not _same_class(recorded, mine.get("class") or mine.get("name")):
            raise ConfigError(
                f"{source} records the {role} as {recorded}; the {role} given is "
                f"{mine.get('class') or mine.get('name')}"
            )
    if missing:
        said = " and ".join(f"the {role} is {name}" for role, name in missing)
        keywords = ", ".join(f"{role}=..." for role, _ in missing)
        raise CheckpointError(
            f"{source}: {said}, not registered, so config.json holds the weights but not how "
            f"to build {'them' if len(missing) > 1 else 'it'}: pass "
            f"{'them' if len(missing) > 1 else 'it'} built as trained, "
            f"VAE.from_pretrained(path, {keywords}) or vaekit.load(path, {keywords})"
        )
