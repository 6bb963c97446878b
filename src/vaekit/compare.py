"""`vaekit compare A B ... --data SOURCE`: several models (runs, model folders, hf://
models, diffusers AutoencoderKLs) evaluated on the same held-out examples, one row each:
PSNR, SSIM, LPIPS and rFID of the posterior-mean reconstructions (the numbers `evaluate`
gives, computed by it), the latent shape and the parameter count.

The examples are read from SOURCE once per model, at that model's image size (a diffusers
model takes the size of the first model with a fixed one, else --image-size or its
sample_size), with the split options of the first run among the models (else the
defaults), so that every model sees the same images; a source whose examples do not fit
a model (an array of another shape) is refused in one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .config import DataConfig
from .diffusers.model import reference_of
from .errors import ConfigError, DataError
from .evaluation.evaluate import evaluate
from .io import checkpoint
from .loading import load_with_data
from .models.pretrained import resolve

COLUMNS = (  # key, heading, format
    ("psnr", "PSNR dB", "{:.2f}"),
    ("ssim", "SSIM", "{:.4f}"),
    ("lpips", "LPIPS", "{:.4f}"),
    ("rfid", "rFID", "{:.3f}"),
)


def compare(
    sources: Sequence[str],
    data: str,
    *,
    split: str = "test",
    image_size: int | None = None,
    batch_size: int = 1000,
    seed: int = 0,
    rfid: Any = None,
    lpips: Any = None,
    fid_weights: str | None = None,
    fid_samples: int = 10_000,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """One row per model of `sources`: its name, the examples (n, data, split), psnr, ssim
    (and lpips, rfid when asked, as for `evaluate`), latent_shape and parameters."""
    if len(sources) < 1:
        raise ConfigError("compare needs at least one model")
    settings, size = _shared(sources)
    rows = []
    for source in sources:
        model, examples = load_with_data(
            source,
            data,
            split=split,
            image_size=image_size or size,
            settings=settings,
            progress=progress,
        )
        stats = evaluate(
            model,
            examples.x,
            examples.y if model.conditional else None,
            batch_size=batch_size,
            seed=seed,
            progress=progress,
            latent_metrics=False,
            rfid=rfid,
            lpips=lpips,
            fid_weights=fid_weights,
            fid_samples=fid_samples,
        )
        if "psnr" not in stats:
            raise DataError(f"{source}: {examples.name} are no images; compare needs images")
        latent = model.latent_shape or (model.latent_dim,)
        row = {"model": str(source), "n": stats["n"], "data": examples.source, "split": split}
        row.update({key: stats[key] for key, _, _ in COLUMNS if key in stats})
        row["latent_shape"] = [int(d) for d in latent]
        row["parameters"] = sum(p.numel() for p in model.parameters())
        rows.append(row)
    if len({r["n"] for r in rows}) > 1:  # the same source and split: a bug if they differ
        raise DataError(f"the models read different numbers of examples of {data}: {rows}")
    return rows


def _shared(sources: Sequence[str]) -> tuple[DataConfig, int | None]:
    """The data options of the first run among `sources` (else the defaults), and its image
    size: the split every model is compared on, and the size diffusers models read at."""
    for source in sources:
        if reference_of(source) is not None:
            continue
        meta = checkpoint.read_meta(resolve(source))
        config = meta["config"]
        shape = meta["architecture"]["input_shape"] if "architecture" in meta else None
        size = int(shape[1]) if shape else None
        if config is not None:
            return config.data, size
        return DataConfig(), size
    return DataConfig(), None


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as aligned text, one model a line; '-' where a number was not asked for."""
    shown = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    head = ["model", *(h for _, h, _ in shown), "latent", "parameters"]
    lines = [head]
    for r in rows:
        cells = [r["model"], *(f.format(r[k]) if k in r else "-" for k, _, f in shown)]
        cells += ["x".join(map(str, r["latent_shape"])), f"{r['parameters']:,}"]
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    ]
    first = rows[0]
    split = "the test split" if first["split"] == "test" else "all"
    return (
        f"{first['n']:,} examples ({split} of {first['data']}), the same for every model\n"
        + "\n".join(text)
    )
