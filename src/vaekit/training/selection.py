"""Model selection on the validation set: its -ELBO per evaluated epoch, the best epoch
(`train.keep: best` saves its weights), and early stopping (`train.patience`).

Selection reads the validation split only; the test set is for `vaekit evaluate` and
`vaekit report`, so the numbers they print were never used to choose the model.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..data import Dataset
from ..errors import ConfigError
from ..evaluation.codebook import codebook_stats
from ..evaluation.likelihood import elbo_stats, layer_kl_stats
from ..io import checkpoint
from ..models import VAE, LadderVAE
from ..wording import option
from .state import TrainState


def require_validation(data: Dataset, t: TrainConfig) -> None:
    """keep: best and patience choose by the validation -ELBO: refuse them without one."""
    if data.x_val is not None:
        return
    asked = [f"train.keep {t.keep}"] if t.keep == "best" else []
    asked += [f"train.patience {t.patience}"] if t.patience else []
    if asked:
        raise ConfigError(
            f"{' and '.join(asked)} choose by the validation -ELBO, but {data.name} has no "
            "validation set (data.val_fraction is 0); set data.val_fraction (e.g. 0.1), or "
            "train.keep last and train.patience 0"
        )


def due(state: TrainState, t: TrainConfig) -> bool:
    """Whether the epoch just finished is evaluated: every `eval_every`-th and the last."""
    return state.epoch % t.eval_every == 0 or state.epoch == t.epochs


def evaluate(
    model: VAE, data: Dataset, state: TrainState, t: TrainConfig, record: dict[str, Any]
) -> bool:
    """At an evaluated epoch, the validation numbers of the epoch just finished into
    `record` (val_nelbo, val_recon, val_kl; seeded like every evaluation), and into
    `state` when they are the best so far; whether they are."""
    if data.x_val is None or not due(state, t):
        return False
    y = data.y_val if model.conditional else None
    stats = elbo_stats(model.eval(), data.x_val, y, t.eval_batch_size, seed=t.seed)
    values = dict(zip(model.term_names, stats.values(), strict=True))  # nelbo, recon, kl
    if isinstance(model, LadderVAE):  # its KL per layer, the same draw: val_kl_1 ...
        layers = layer_kl_stats(model, data.x_val, y, t.eval_batch_size, seed=t.seed)
        record.update({f"val_{k}": v for k, v in layers.items()})
    if model.has_density:
        record.update({f"val_{k}": v for k, v in values.items()})
    else:  # a VQ-VAE: its objective and terms, and how it uses its codebook
        values.update(codebook_stats(model, data.x_val, t.eval_batch_size))
        record.update({f"val_{k}": v for k, v in values.items()})
    return state.improved(values[model.term_names[0]])


def out_of_patience(state: TrainState, t: TrainConfig) -> bool:
    """`patience` epochs have passed since the best validation -ELBO (or with none yet)."""
    return bool(t.patience) and state.epoch - state.best_epoch >= t.patience


def epoch_line(record: dict[str, Any], epochs: int, best: bool) -> str:
    """The line a run prints at an epoch's end."""
    key, what = ("nelbo", "-ELBO") if "train_nelbo" in record else ("objective", "objective")
    val = ""
    if f"val_{key}" in record:
        val = f", validation {what} {record[f'val_{key}']:.2f}" + (" (best)" if best else "")
    return (
        f"epoch {record['epoch']}/{epochs}: train {what} {record[f'train_{key}']:.2f}{val} "
        f"nats, {_rate(record['samples_per_s'])} samples/s"
    )


def _rate(per_s: float) -> str:
    """Whole samples/s, or 2 significant digits under 10 (a big model on a CPU: not 0)."""
    return f"{per_s:,.0f}" if per_s >= 10 else f"{per_s:.2g}"


def stop_line(state: TrainState) -> str:
    return (
        f"stopping early: no better validation -ELBO for {state.epoch - state.best_epoch} "
        f"epochs (the best: {state.best_nelbo:.2f} at epoch {state.best_epoch})"
    )


def best_model(shown: VAE, run_dir: Path) -> VAE:
    """A copy of `shown` holding the weights model.safetensors kept (keep: best), so the
    model a fit returns is the one `vaekit.load(run_dir)` gives."""
    best = copy.deepcopy(shown)
    best.load_state_dict(checkpoint.read_weights(run_dir))
    return best


def check_patience_left(state: TrainState, t: TrainConfig, run_dir: Path) -> None:
    """A resume of a run that stopped early would only stop again: say so, and how to go on."""
    if state.epoch and out_of_patience(state, t):
        raise ConfigError(
            f"{option('resume')}: the run in {run_dir} stopped early at epoch {state.epoch}: "
            f"no better validation -ELBO for {state.epoch - state.best_epoch} epochs "
            f"(train.patience {t.patience}); raise train.patience to train further"
        )
