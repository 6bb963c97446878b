"""Reproduce Kingma & Welling (2013): Figure 2, the lower bound on the training and test sets
against the number of training samples evaluated for latent sizes 3, 5, 10, 20 and 200, and
Appendix A's learned 2-D manifold, with the paper's MLP (500 tanh units, minibatches of 100,
Adagrad: the `kingma2013-mnist` preset).

The figure is the bound on training and test images as training goes, so its callback
reads the test set, as the paper's figure does; it reproduces a published result and
selects nothing by it (every model trains its fixed budget, the last weights are kept).
The Trainer itself never reads the test set; the preset holds out no validation set,
as the paper trains on the whole training set."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from .. import untrusted_files
from ..config import Config, load_config
from ..data import Dataset, load_data
from ..data.sources import find_local
from ..errors import ConfigError, DataError
from ..evaluation.likelihood import elbo_stats
from ..evaluation.metrics import active_units
from ..io import fileio
from ..models import VAE, load
from ..progress import bar as progress_bar
from ..training.callbacks import Callback, TrainerView
from ..training.preflight import resolve_device
from ..training.trainer import Trainer
from ..viz import charts, grid

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PRESET = "kingma2013-mnist"


@dataclass(frozen=True)
class Budget:
    """How much of the paper's experiment to run."""

    samples: int  # training samples evaluated per latent size: the x-axis ends here
    first_eval: int  # the first evaluation point; the others are log-spaced up to `samples`
    points_per_decade: int
    eval_examples: int  # train and test images the bound is estimated on (0: all of them)
    manifold_samples: int  # training samples of the 2-D model of Appendix A
    manifold_n: int = 20  # the manifold is decoded over an n x n grid
    latent_sizes: tuple[int, ...] = (3, 5, 10, 20, 200)


BUDGETS = {
    # the paper's whole x-axis (10^5 .. 10^8 samples) on full train and test sets: ~6 hours
    # on 2 CPU cores at ~20k samples/s, well under an hour on a GPU
    "full": Budget(100_000_000, 100_000, 4, 0, 10_000_000),
    # the first two decades of the paper's figure (10^4 .. 10^6), bound on 1000 + 1000
    # images: about 10 minutes on 2 CPU cores
    "small": Budget(1_000_000, 10_000, 4, 1000, 500_000),
    # seconds, for tests
    "tiny": Budget(2_000, 500, 2, 100, 1_000, 5, (3, 5)),
}


def eval_points(budget: Budget, batch_size: int) -> list[int]:
    """Log-spaced sample counts (multiples of the batch size) where the bound is measured."""
    decades = math.log10(budget.samples / budget.first_eval)
    count = max(1, round(decades * budget.points_per_decade)) + 1
    points = {
        budget.first_eval * (budget.samples / budget.first_eval) ** (i / (count - 1))
        if count > 1
        else budget.samples
        for i in range(count)
    }
    return sorted({max(batch_size, round(p / batch_size) * batch_size) for p in points})


def default_dataset() -> str:
    """MNIST as in the paper when a copy is on this machine, else Fashion-MNIST."""
    return "mnist" if find_local("mnist") is not None else "fashion-mnist"


def kingma2013_config(
    data: str | None = None, seed: int = 0, device: str = "auto", threads: int = 0
) -> Config:
    return load_config(
        PRESET,
        {
            "data.name": data or default_dataset(),
            "train.seed": seed,
            "train.device": device,
            "train.threads": threads,
            "train.progress": False,
        },
    )


def _subset(x: torch.Tensor, n: int) -> torch.Tensor:
    return x if n <= 0 else x[:n]


class _Curve(Callback):
    """Measures the bound on training and test images when the samples seen reach each
    point, and stops the Trainer after the last one."""

    def __init__(self, points: list[int], x_eval: dict[str, torch.Tensor], bar: Any) -> None:
        self.pending = list(points)
        self.x_eval = x_eval
        self.bar = bar
        self.curve: list[dict[str, float]] = []
        self.started = time.perf_counter()

    def on_step_end(self, trainer: TrainerView) -> None:
        batch = trainer.config.train.batch_size
        seen = trainer.state.global_step * batch
        self.bar.update(batch)
        if not self.pending or seen < self.pending[0]:
            return
        self.pending.pop(0)
        model = trainer.shown.eval()
        point = {
            "samples": seen,
            "seconds": time.perf_counter() - self.started,
            "skipped_updates": trainer.state.skipped_updates,  # as of the last record read
        }
        for split, x in self.x_eval.items():
            point[f"{split}_bound"] = -elbo_stats(model, x, seed=1234)["nelbo"]
        self.curve.append(point)
        trainer.model.train()  # type: ignore[union-attr]
        if not self.pending:
            trainer.stop()


def train_curve(
    config: Config,
    data: Dataset,
    latent_dim: int,
    samples: int,
    points: list[int],
    eval_examples: int,
    out: Path,
    progress: bool = True,
) -> tuple[VAE, list[dict[str, float]]]:
    """Train one VAE on `samples` training samples with the Trainer (its run directory:
    `out`); measure the bound at each point.

    Minibatches of the preset's size are drawn from seeded epoch permutations, as every
    run draws them; the bound is the seeded single-sample ELBO per example.
    """
    per_epoch = (data.x_train.shape[0] // config.train.batch_size) * config.train.batch_size
    epochs = max(1, math.ceil(samples / max(per_epoch, 1)))
    config = dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, latent_dim=latent_dim),
        train=dataclasses.replace(
            config.train,
            epochs=epochs,
            eval_every=epochs,  # the curve is the evaluation: none at epoch ends but the last
            out=str(out),
        ),
    )
    x_eval = {
        "train": _subset(data.x_train, eval_examples),
        "test": _subset(data.x_test, eval_examples),
    }
    bar = progress_bar(
        total=samples,
        show=progress,
        unit="sample",
        unit_scale=True,
        desc=f"N_z = {latent_dim}",
        leave=False,
    )
    curve = _Curve(points, x_eval, bar)
    result = Trainer(None, config, data=data, callbacks=[curve], overwrite=True).fit()
    bar.close()
    return result.model, curve.curve


def figure2(curves: dict[int, list[dict[str, float]]], dataset: str) -> Figure:
    """The paper's Figure 2: one panel per latent size, the bound on the training set
    (dashed) and the test set (solid) against the training samples evaluated, on a log
    axis as in the paper, all panels on one y-scale."""
    if not curves:
        raise ValueError("figure2 needs at least one curve")
    fig = charts.new_figure(len(curves), (340, 320))
    for i, (ax, (latent_dim, curve)) in enumerate(
        zip(fig.axes, sorted(curves.items()), strict=True)
    ):
        rgb = charts.PALETTE[i % len(charts.PALETTE)]
        light = ((rgb[0] + 255) // 2, (rgb[1] + 255) // 2, (rgb[2] + 255) // 2)  # train: dashed
        series = {
            "test": [(p["samples"], p["test_bound"]) for p in curve],
            "train": [(p["samples"], p["train_bound"]) for p in curve],
        }
        charts.draw_lines(
            ax,
            series,
            f"{dataset}, N_z = {latent_dim}",
            "training samples evaluated",
            "lower bound (nats)" if i == 0 else "",
            logx=True,
            dashed=("train",),
            colours={"test": rgb, "train": light},
        )
    axes = fig.axes
    low = min(ax.get_ylim()[0] for ax in axes)
    high = max(ax.get_ylim()[1] for ax in axes)
    for ax in axes:
        ax.set_ylim(low, high)
    return fig


def _manifold(model: VAE, n: int) -> Image.Image:
    from ..viz import figures

    images = figures.manifold(model, n=n)  # (n*n, C, H, W) over the inverse-CDF grid
    return grid.to_pil(grid.make_grid(images, nrow=n, padding=0), 2)


def reproduce_kingma2013(
    out: str | Path,
    budget: str = "small",
    data: str | None = None,
    seed: int = 0,
    device: str = "auto",
    threads: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Run Figure 2 and Appendix A at `budget`; write into `out` and return the results.

    Writes figure2.png, figure2.json (the curves), manifold.png, and one model folder per
    latent size (nz-3, ..., nz-2), each loadable by `vaekit evaluate`. A latent size whose
    folder already holds the curve of this budget is read back, not retrained, so an
    interrupted full run continues where it stopped.
    """
    if budget not in BUDGETS:
        raise ConfigError(f"--budget must be small or full; got {budget!r}")
    b = BUDGETS[budget]
    config = kingma2013_config(data, seed, device, threads)
    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    dataset = load_data(config.data, seed=seed, progress=progress)
    points = eval_points(b, config.train.batch_size)
    started = time.perf_counter()
    curves: dict[int, list[dict[str, float]]] = {}
    units: dict[int, int] = {}
    train_seconds = 0.0  # of every model, also those read back from an earlier run
    key = {"budget": budget, "dataset": dataset.name, "seed": seed, "points": points}
    for latent_dim in (*b.latent_sizes, 2):
        model, curve = _one_latent_size(out, config, dataset, b, latent_dim, points, key, progress)
        if progress and curve:
            _say(latent_dim, curve[-1])
        train_seconds += curve[-1]["seconds"] if curve else 0.0
        if latent_dim == 2:
            fileio.write_bytes(out / "manifold.png", grid.png_bytes(_manifold(model, b.manifold_n)))
        else:
            curves[latent_dim] = curve
            units[latent_dim] = _units_in_use(model, dataset, b)
    result = {
        "paper": "Kingma & Welling (2013), Figure 2 and Appendix A",
        "dataset": dataset.name,
        "budget": budget,
        "budget_spec": dataclasses.asdict(b),
        "config": config.to_dict(),
        "eval_points": points,
        "seconds": time.perf_counter() - started,
        "train_seconds": train_seconds,
        "curves": {str(k): v for k, v in curves.items()},
        "final": _final(curves, units),
    }
    fileio.write_json(out / "figure2.json", result)
    fileio.write_bytes(out / "figure2.png", charts.png_bytes(figure2(curves, dataset.name)))
    return result


def _say(latent_dim: int, last: dict[str, float]) -> None:
    """The last point of a latent size's curve, on stderr."""
    print(
        f"N_z = {latent_dim:3d}: after {last['samples']:,} samples, bound "
        f"{last['train_bound']:.2f} (train) {last['test_bound']:.2f} (test)",
        file=sys.stderr,
    )


def _units_in_use(model: VAE, dataset: Dataset, b: Budget) -> int:
    """The paper's explanation of why superfluous latents do not overfit: the KL term
    switches them off; the latent units still in use (Burda et al. 2015)."""
    return active_units(model, _subset(dataset.x_test, b.eval_examples), batch_size=1000).count


def _final(curves: dict[int, list[dict[str, float]]], units: dict[int, int]) -> dict[str, Any]:
    """The last point of each curve and its model's active units, by latent size."""
    return {
        str(k): {
            "train": v[-1]["train_bound"],
            "test": v[-1]["test_bound"],
            "active_units": units[k],
        }
        for k, v in curves.items()
        if v
    }


def _one_latent_size(
    out: Path,
    config: Config,
    dataset: Dataset,
    b: Budget,
    latent_dim: int,
    points: list[int],
    key: dict[str, Any],
    progress: bool,
) -> tuple[VAE, list[dict[str, float]]]:
    """The model and curve of one latent size: read back when out/nz-K holds this budget's
    curve, else trained (the 2-D manifold model on its own budget)."""
    folder = out / f"nz-{latent_dim}"
    saved = folder / "curve.json"
    cached = untrusted_files.read_json(saved, DataError) if saved.is_file() else {}
    if isinstance(cached, dict) and cached.get("key") == key:
        curve = cached["curve"]
        return load(folder, resolve_device(config.train.device)), curve
    saved.unlink(missing_ok=True)  # another budget's curve: train.overwrite keeps no stranger
    samples = b.samples if latent_dim != 2 else b.manifold_samples
    at = sorted({p for p in points if p <= samples} | {samples})
    model, curve = train_curve(
        config, dataset, latent_dim, samples, at, b.eval_examples, folder, progress
    )
    fileio.write_json(saved, {"key": key, "curve": curve})
    return model, curve


def summary(result: dict[str, Any]) -> str:
    """What the run shows, in the paper's terms."""
    final = {int(k): v for k, v in result["final"].items()}
    lines = [
        f"Figure 2 on {result['dataset']} ({result['budget']} budget, "
        f"{result['budget_spec']['samples']:,} training samples per latent size, "
        f"trained in {result['train_seconds'] / 60:.1f} min); lower bound per example, "
        "nats:",
        "  N_z     train      test   train - test   active units",
    ]
    for k in sorted(final):
        tr, te = final[k]["train"], final[k]["test"]
        lines.append(
            f"  {k:3d}  {tr:9.2f} {te:9.2f} {tr - te:10.2f}   {final[k]['active_units']:6d} of {k}"
        )
    if len(final) > 1:
        best = max(final, key=lambda k: final[k]["test"])
        gaps = {k: final[k]["train"] - final[k]["test"] for k in final}
        lines.append(
            f"best test bound at N_z = {best}; the largest train - test gap is "
            f"{max(gaps.values()):.2f} nats (N_z = {max(gaps, key=lambda k: gaps[k])})"
        )
    return "\n".join(lines)
