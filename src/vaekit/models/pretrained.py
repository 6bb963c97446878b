"""Saving and loading a model the Hugging Face way: `save_pretrained`, `from_pretrained`,
`push_to_hub`, and `load` (a run directory, a model folder or `hf://OWNER/NAME`).

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
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from .. import __version__
from ..config import Config
from ..errors import CheckpointError, ConfigError, DataError
from ..io import card, checkpoint, hub

P = TypeVar("P", bound="Pretrained")


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


class Pretrained(nn.Module):
    """save_pretrained / from_pretrained / push_to_hub for `VAE` (see models/vae.py)."""

    run_config: Config | None  # the configuration of the run that trained it, if known
    class_names: list[str]  # the dataset's label names, if any

    def architecture(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_architecture(cls: type[P], architecture: dict[str, Any], source: str = "") -> P:
        raise NotImplementedError

    @classmethod
    def from_config(cls: type[P], cfg: Any, input_shape: Any, num_classes: int = 0) -> P:
        raise NotImplementedError

    def custom_architectures(self) -> list[str]:
        raise NotImplementedError

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
        config = config if config is not None else getattr(self, "run_config", None)
        names = class_names if class_names is not None else getattr(self, "class_names", [])
        meta: dict[str, Any] = {
            "library_name": "vaekit",
            "vaekit_version": __version__,
            "architecture": self.architecture(),
            "class_names": [str(n) for n in names],
        }
        if config is not None:
            meta["config"] = config.to_dict()
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
    def from_folder(cls: type[P], folder: Path, device: str | torch.device = "cpu") -> P:
        """The model in a local model folder, strictly: architecture from config.json
        through the registry, then the weights, compared before any is copied."""
        meta = checkpoint.read_meta(folder)
        source = str(folder / checkpoint.CONFIG_FILE)
        config: Config | None = meta["config"]
        if "architecture" in meta:
            model = cls.from_architecture(meta["architecture"], source)
        else:  # written by vaekit 0.1: the built-in architecture its config describes,
            assert config is not None  # whose conv decoder could only be GroupNorm's
            legacy = dataclasses.replace(config.model, decoder_norm="group")
            model = cls.from_config(legacy, meta["input_shape"], meta["num_classes"])
        tensors = checkpoint.read_weights(folder)
        checkpoint.check_state_dict(model, tensors, str(folder / checkpoint.MODEL_FILE))
        model.load_state_dict(tensors, strict=True)
        model.run_config = config
        model.class_names = list(meta["class_names"])
        return model.to(device).eval()

    @classmethod
    def from_pretrained(
        cls: type[P],
        path_or_repo_id: str | Path,
        *,
        revision: str | None = None,
        device: str | torch.device = "cpu",
    ) -> P:
        """A model from a local folder (a run directory or a `save_pretrained` folder), a
        Hub repo id `OWNER/NAME` or `hf://OWNER/NAME` (needs vaekit[hub]; `revision` is a
        branch, tag or commit). Its architecture must be registered in this process."""
        return cls.from_folder(resolve(path_or_repo_id, revision=revision, repo_ids=True), device)

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
            config=config if config is not None else getattr(self, "run_config", None),
            custom=self.custom_architectures(),
        ).encode("utf-8")
        if not dry_run:
            hub.upload(plan, private=private, message=commit_message)
        return plan
