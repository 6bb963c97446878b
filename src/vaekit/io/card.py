"""The model card: README.md of a Hub repo, from the template templates/modelcard.md.

YAML front matter the Hub reads (library_name, tags, datasets), then the model in prose:
what it is, how to load it, its evaluation and training numbers, its samples and its
configuration. Filled from plain values (an architecture record, numbers, file names), so
that a model pushed from Python and a run pushed by `vaekit push` get the same card.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from .. import templates
from ..config import Config
from ..version import __version__

TAGS = ["vaekit", "vae", "variational-autoencoder", "generative-model", "pytorch", "safetensors"]
# named datasets and their Hub ids, so the model page links its training data
HUB_DATASETS = {"mnist": "ylecun/mnist", "fashion-mnist": "zalando-datasets/fashion_mnist"}
CAPTIONS = {
    "samples.png": "Samples from the prior",
    "reconstructions.png": "Images (top) and their reconstructions (bottom)",
}
# arguments the VAE derives from its own settings: not worth a reader's attention
_DERIVED = {"input_shape", "cond_dim", "in_features", "params_per_pixel"}


def table(header: list[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; `|` inside a cell is escaped."""
    cells = [[str(c).replace("|", "\\|").replace("\n", " ") for c in r] for r in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells]) + "\n"


def describe_latent(architecture: dict[str, Any]) -> str:
    """'a 20-D latent vector' or 'a 4x16x16 spatial latent (1,024 values)', and a VQ-VAE's
    codebook ('quantised by a codebook of 512 codes'), an IAF posterior, a VampPrior."""
    shape = architecture.get("latent_shape")
    if isinstance(shape, list) and shape:
        values = architecture["latent_dim"]
        text = f"a {'x'.join(map(str, shape))} spatial latent ({values:,} values)"
    else:
        text = f"a {architecture['latent_dim']}-D latent vector"
    if architecture.get("posterior") == "vq" and isinstance(architecture.get("codebook_size"), int):
        text += f", quantised by a codebook of {architecture['codebook_size']:,} codes"
    if architecture.get("posterior") == "iaf":
        text += f", an IAF posterior of {architecture.get('flow_steps')} flow steps"
        if architecture.get("flow_context"):
            text += f" reading a context of {architecture['flow_context']} from the encoder"
    if architecture.get("prior") == "vamp":
        text += f", a VampPrior of {architecture.get('pseudo_inputs')} pseudo-inputs"
    layers = architecture.get("latent_dims")
    if architecture.get("posterior") == "ladder" and isinstance(layers, list):
        unit = "channels" if isinstance(shape, list) and shape else "values"  # maps or vectors
        text += f" in {len(layers)} top-down layers of {', '.join(map(str, layers))} {unit}"
    return text


def describe_architecture(architecture: dict[str, Any]) -> str:
    """'mlp-encoder + mlp-decoder (hidden [512], activation relu)': the registered names
    and the arguments a reader chose, from config.json's architecture record."""
    halves = [architecture["encoder"], architecture["decoder"]]
    names = " + ".join(str(h.get("name") or h.get("class")) for h in halves)  # class: unregistered
    args: dict[str, Any] = {}
    for half in halves:
        args.update({k: v for k, v in half.get("args", {}).items() if k not in _DERIVED})
    shown = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in args.items())
    return f"{names} ({shown})" if shown else names


def _nats(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else ""


def _training(records: Sequence[dict[str, Any]]) -> str:
    """The last ten epochs of metrics.jsonl as a Markdown section ('' without records):
    the training and validation -ELBO (and the test -ELBO that logs of older vaekit hold,
    whose training evaluated the test set)."""
    if not records:
        return ""
    shown = records[-10:]
    columns = [("train_nelbo", "train -ELBO"), ("val_nelbo", "validation -ELBO")]
    if any("train_objective" in r for r in shown):  # a VQ-VAE: no ELBO
        columns = [("train_objective", "train objective"), ("val_objective", "val objective")]
        columns.append(("val_perplexity", "validation codebook perplexity"))
    if any("test_nelbo" in r for r in shown):
        columns.append(("test_nelbo", "test -ELBO (logged in training)"))
    rows = [
        [r.get("epoch", ""), *(_nats(r.get(k)) for k, _ in columns), r.get("skipped_updates", 0)]
        for r in shown
    ]
    head = ["epoch", *(name for _, name in columns), "skipped updates"]
    return "## Training\n\n" + table(head, rows)


def _summary(
    architecture: dict[str, Any],
    parameters: int,
    class_names: Sequence[str],
    config: Config | None,
    last: dict[str, Any],
    data_source: dict[str, Any] | None = None,
) -> list[list[str]]:
    c, h, w = architecture["input_shape"]
    data = f"{c}x{h}x{w} images"
    num_classes = architecture.get("num_classes", 0)
    named = data_name(config, data_source)
    rows = [
        ["data", f"{named} ({data})" if named else data],
        [
            "model",
            f"{describe_architecture(architecture)}; {describe_latent(architecture)}; "
            f"{architecture['likelihood']} likelihood",
        ],
        [
            "conditional",
            f"yes, {num_classes} classes: {', '.join(class_names)}" if num_classes else "no",
        ],
        ["parameters", f"{parameters:,}"],
    ]
    if config is not None:
        t, o = config.train, config.optim
        kept = "; weights of the epoch with the best validation -ELBO" if t.keep == "best" else ""
        objective = config.loss.objective  # another than the ELBO's: named, not its beta
        weighed = f"beta {config.loss.beta:g}" if objective == "elbo" else f"objective {objective}"
        rows.append(
            [
                "training",
                f"{last.get('epoch', t.epochs)} epochs, {last.get('step', '?')} steps of "
                f"batch {t.batch_size}; {o.name}, lr {o.lr:g}; {weighed}{kept}",
            ]
        )
    rows.append(["vaekit", __version__])
    return rows


def _configuration(config: Config | None, data_source: dict[str, Any] | None) -> str:
    if config is None:
        return ""
    note = ""
    if data_source is not None and data_source.get("kind") == "python":
        note = "# data.name was not used: the data was passed from Python (Trainer(data=...))\n"
    return f"## Configuration\n\n```yaml\n{note}{config.to_yaml().rstrip()}\n```\n"


def data_name(config: Config | None, data_source: dict[str, Any] | None) -> str | None:
    """How the card names the training data: config.json's `data_source` record (data
    passed from Python is said so), else the config's data.name (runs before the record)."""
    if data_source is None:
        return config.data.name if config is not None else None
    if data_source.get("kind") == "python":
        return "data passed from Python (Trainer(data=...))"
    return str(data_source.get("name") or (config.data.name if config else "")) or None


def _use(repo_id: str, architecture: dict[str, Any]) -> dict[str, str]:
    """The card's two usage lines: sampling, or for a VQ-VAE (no prior over its codes
    yet) reconstructing and encoding to codes."""
    c, h, w = architecture["input_shape"]
    if architecture.get("posterior") == "vq":  # a VQ-VAE: it cannot sample
        return {
            "use_command": f"vaekit encode hf://{repo_id} --data SOURCE --out codes.npy",
            "use_python": f"codes = model.encode_codes(images)  # images (N, {c}, {h}, {w})",
        }
    return {
        "use_command": f"vaekit sample hf://{repo_id} --out samples.png",
        "use_python": f"images = model.sample(16)  # (16, {c}, {h}, {w}), values in [0, 1]",
    }


def model_card(
    repo_id: str,
    *,
    architecture: dict[str, Any],
    parameters: int,
    class_names: Sequence[str] = (),
    config: Config | None = None,
    data_source: dict[str, Any] | None = None,
    custom: Sequence[str] = (),
    records: Sequence[dict[str, Any]] = (),
    evaluation: Sequence[tuple[str, str, str]] = (),
    source: str = "none: the model was pushed without an evaluation",
    images: Sequence[str] = (),
) -> str:
    """README.md for the Hub repo `repo_id`.

    `architecture` is config.json's record; `custom` names the registered architectures
    that are not vaekit's own (the card says to import them before loading);
    `evaluation` holds (metric, value, note) rows and `source` where they come from;
    `records` are metrics.jsonl lines; `images` the PNG files uploaded beside the card;
    `data_source` the record of where the training data came from (data/provenance.py):
    the Hub's `datasets:` tag names a dataset only when the model was trained on it.
    """
    meta: dict[str, Any] = {"library_name": "vaekit", "tags": list(TAGS)}
    meta["pipeline_tag"] = "unconditional-image-generation"
    named = data_name(config, data_source)
    if named in HUB_DATASETS:
        meta["datasets"] = [HUB_DATASETS[named]]
    last = dict(records[-1]) if records else {}
    samples = "".join(f"\n![{CAPTIONS[f]}]({f})\n\n*{CAPTIONS[f]}.*\n" for f in images)
    registered = ""
    if custom:
        names = ", ".join(f"`{n}`" for n in custom)
        registered = (
            f"\nIts architecture ({names}) is registered by the code that trained it: import "
            "that code, which carries `@vaekit.register(...)`, before loading (vaekit never "
            "runs code from the files).\n"
        )
    return templates.render(
        "modelcard.md",
        meta=yaml.safe_dump(meta, sort_keys=False).rstrip(),
        repo_id=repo_id,
        summary=table(
            ["", ""], _summary(architecture, parameters, class_names, config, last, data_source)
        ).rstrip(),
        **_use(repo_id, architecture),
        registered=registered,
        source=source,
        evaluation=table(["metric", "value", ""], [list(r) for r in evaluation])
        if evaluation
        else "",
        training=_training(records),
        samples=f"## Samples\n{samples}" if images else "",
        configuration=_configuration(config, data_source),
    )
