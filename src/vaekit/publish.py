"""`vaekit push RUN REPO_ID`: share a trained run on the Hugging Face Hub.

The run must load strictly (never upload weights that do not load); its model card
carries the test-set evaluation (or, without one, the last test numbers of a log written
by an older vaekit, whose training evaluated the test set; today's training does not),
the training curve's last epochs, the sample images and the configuration. The files go
up in one commit through io/hub.py. A model in Python pushes itself with
`model.push_to_hub` instead (no run directory, no evaluation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import tracking
from .errors import ConfigError, DataError
from .evaluation.summary import metrics_rows
from .io import card, checkpoint, hub
from .models import VAE, load
from .models.pretrained import resolve


def _card_stats(
    run_dir: Path,
    model: VAE,
    iw_samples: int,
    run_evaluate: bool,
    seed: int,
    progress: bool,
    data: str | None = None,
) -> tuple[dict[str, Any], str]:
    """The numbers for the card and a sentence saying where they come from."""
    if run_evaluate:
        from .evaluation.evaluate import evaluate
        from .loading import load_with_data

        try:
            model, examples = load_with_data(run_dir, data, progress=progress)
        except DataError as e:
            raise DataError(
                f"{e}; or push with --no-evaluate to use the test numbers of the training log"
            ) from None
        y = examples.y if model.conditional else None
        iw_samples = iw_samples if model.has_density else 0  # a VQ-VAE has no log p(x)
        stats = evaluate(model, examples.x, y, seed=seed, iw_samples=iw_samples, progress=progress)
        how = f"`vaekit evaluate` on {examples.name} ({stats['n']:,} images), seed {seed}"
        if iw_samples:
            how += f", log p(x) from K = {iw_samples} importance samples per image"
        return stats, how
    records = [r for r in tracking.read_metrics(run_dir) if "test_nelbo" in r]
    if not records:  # training evaluates the validation set only (see ## Training)
        return {}, "none: pushed without an evaluation, and training never evaluates the test set"
    last = records[-1]
    stats = {k.removeprefix("test_"): v for k, v in last.items() if k.startswith("test_")}
    return stats, (
        f"the training log (metrics.jsonl), epoch {last.get('epoch', '?')}: one "
        "z-sample per test image, no importance-weighted estimate"
    )


def plan_push(
    run: str | Path,
    repo_id: str,
    *,
    iw_samples: int = 100,
    run_evaluate: bool = True,
    seed: int = 0,
    progress: bool = False,
    data: str | None = None,
) -> hub.PushPlan:
    """Check the run loads strictly, evaluate it (on `data`'s test split, or on the data it
    trained on: `vaekit.loading.load_with_data`) and write the card; nothing leaves the
    disk."""
    if str(run).startswith("hf://"):
        raise ConfigError(f"push takes a local run directory, not {run}")
    if iw_samples < 0:
        raise ConfigError(f"--iw-samples must be >= 0; got {iw_samples}")
    hub.check_repo_id(repo_id)
    run_dir = resolve(run)
    model = load(run_dir)  # never upload weights that do not load
    stats, source = _card_stats(run_dir, model, iw_samples, run_evaluate, seed, progress, data)
    images = [f for f in hub.IMAGE_FILES if (run_dir / f).is_file()]
    text = card.model_card(
        repo_id,
        architecture=model.architecture(),
        parameters=sum(p.numel() for p in model.parameters()),
        class_names=model.class_names,
        config=model.run_config,
        data_source=model.data_source,
        custom=model.custom_architectures(),
        records=tracking.read_metrics(run_dir),
        evaluation=metrics_rows(stats),
        source=source,
        images=images,
    )
    plan = hub.PushPlan(repo_id)
    plan.files[hub.CARD_FILE] = text.encode("utf-8")
    plan.files[checkpoint.CONFIG_FILE] = run_dir / checkpoint.CONFIG_FILE
    plan.files[checkpoint.MODEL_FILE] = run_dir / checkpoint.MODEL_FILE
    plan.files.update({f: run_dir / f for f in images})
    if not model.has_density and model.has_prior:  # a VQ-VAE's prior over its codes
        plan.files.update({f: run_dir / f for f in checkpoint.PRIOR_FILES})
    return plan


def push(
    run: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    iw_samples: int = 100,
    run_evaluate: bool = True,
    message: str | None = None,
    seed: int = 0,
    progress: bool = False,
    data: str | None = None,
) -> hub.PushPlan:
    """Upload a run's model folder, images and model card to `repo_id` in one commit.

    Creates the repo if needed (`private` then applies; an existing repo keeps its
    visibility). Authentication is huggingface_hub's: `hf auth login` or HF_TOKEN.
    """
    hub.client("vaekit push")  # before the evaluation, not after it
    plan = plan_push(
        run,
        repo_id,
        iw_samples=iw_samples,
        run_evaluate=run_evaluate,
        seed=seed,
        progress=progress,
        data=data,
    )
    hub.upload(plan, private=private, message=message)
    return plan
