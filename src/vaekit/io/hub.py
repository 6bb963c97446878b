"""Share models on the Hugging Face Hub: `push` a run's model folder, `download` it back.

A pushed repo holds what `vaekit.load` reads, config.json and model.safetensors (never a
pickle), plus a generated model card (README.md) and the run's sample images. The client,
`huggingface_hub`, is the `[hub]` extra and is imported only here, only when used.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import yaml

from .. import __version__, tracking
from ..errors import CheckpointError, ConfigError, DataError, VaekitError
from . import checkpoint
from .checkpoint import CONFIG_FILE, MODEL_FILE

CARD_FILE = "README.md"
IMAGE_FILES = ("samples.png", "reconstructions.png")
# what a download fetches: named files only, so no pickle (.bin, .pt, .pkl) ever arrives
FETCHED = (CONFIG_FILE, MODEL_FILE, CARD_FILE, *IMAGE_FILES)
TAGS = ["vaekit", "vae", "variational-autoencoder", "generative-model", "pytorch", "safetensors"]
# named datasets and their Hub ids, so the model page links its training data
HUB_DATASETS = {"mnist": "ylecun/mnist", "fashion-mnist": "zalando-datasets/fashion_mnist"}
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def _client(what: str) -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise VaekitError(
            f"{what} needs the Hugging Face Hub client: pip install 'vaekit[hub]'"
        ) from None
    return huggingface_hub


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def check_repo_id(repo_id: str) -> str:
    if not _REPO_ID.fullmatch(repo_id) or ".." in repo_id:
        raise ConfigError(
            f"{repo_id!r} is not a Hub repo id; write OWNER/NAME, e.g. alice/fashion-vae"
        )
    return repo_id


def parse_uri(uri: str) -> tuple[str, str | None]:
    """`hf://OWNER/NAME[@REVISION]` as (repo id, revision or None)."""
    rest = uri.removeprefix("hf://").strip("/")
    repo_id, _, revision = rest.partition("@")
    if not _REPO_ID.fullmatch(repo_id) or ".." in repo_id or (revision == "" and "@" in rest):
        raise CheckpointError(
            f"{uri!r} is not a Hub model address; write hf://OWNER/NAME "
            "(or hf://OWNER/NAME@REVISION)"
        )
    return repo_id, revision or None


def download(uri: str) -> Path:
    """The local snapshot folder of `hf://OWNER/NAME[@REVISION]`, fetched or from the cache.

    Goes through huggingface_hub's cache, so HF_HUB_OFFLINE=1, HF_HUB_CACHE and HF_TOKEN
    work as everywhere else. Fetches only FETCHED, and checks that it is a vaekit model.
    """
    repo_id, revision = parse_uri(uri)
    hub = _client(f"loading {uri}")
    try:
        folder = Path(
            hub.snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=list(FETCHED),
                library_name="vaekit",
                library_version=__version__,
            )
        )
    except Exception as e:  # the client raises its HTTP library's errors, OSError, ValueError
        name = type(e).__name__
        if name in ("RepositoryNotFoundError", "GatedRepoError"):
            hint = "check the name; a private or gated repo needs `hf auth login` or HF_TOKEN"
        elif name == "RevisionNotFoundError":
            hint = "check the revision after @"
        elif isinstance(e, FileNotFoundError):  # LocalEntryNotFoundError: offline, not cached
            hint = (
                "it is not in the local cache and the Hub cannot be reached (offline or "
                "HF_HUB_OFFLINE=1); connect once to download it"
            )
        else:
            hint = "check the network, or the name"
        raise CheckpointError(
            f"could not fetch {uri} from the Hugging Face Hub ({_first_line(e)}); {hint}"
        ) from None
    for name in (CONFIG_FILE, MODEL_FILE):
        if not (folder / name).is_file():
            raise CheckpointError(
                f"{uri} is not a vaekit model: it has no {name} (vaekit "
                "loads config.json + model.safetensors, never pickles)"
            )
    try:
        library = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")).get("library_name")
    except (ValueError, UnicodeDecodeError, AttributeError):
        library = None  # read_meta names the damage when it loads the file
    else:
        if library != "vaekit":
            raise CheckpointError(
                f"{uri} is not a vaekit model (its {CONFIG_FILE} says library_name {library!r})"
            )
    return folder


# -- the model card ---------------------------------------------------------------------------
def _card_stats(
    run_dir: Path, model: Any, iw_samples: int, run_evaluate: bool, seed: int, progress: bool
) -> tuple[dict[str, Any], str]:
    """The numbers for the card and a sentence saying where they come from."""
    if run_evaluate:
        from ..data import load_data
        from ..evaluation.evaluate import evaluate

        cfg = model.run_config
        try:
            data = load_data(cfg.data, seed=cfg.train.seed, progress=progress)
        except DataError as e:
            raise DataError(
                f"{e}; or push with --no-evaluate to use the test numbers of the training log"
            ) from None
        y = data.y_test if model.conditional else None
        stats = evaluate(model, data.x_test, y, seed=seed, iw_samples=iw_samples, progress=progress)
        how = (
            f"`vaekit evaluate` on the test set of {data.name} ({stats['n']:,} images), "
            f"seed {seed}"
            + (
                f", log p(x) from K = {iw_samples} importance samples per image"
                if iw_samples
                else ""
            )
        )
        return stats, how
    records = [r for r in tracking.read_metrics(run_dir) if "test_nelbo" in r]
    if not records:
        return {}, "none: the training log holds no test-set evaluation"
    last = records[-1]
    stats = {k.removeprefix("test_"): v for k, v in last.items() if k.startswith("test_")}
    return stats, (
        f"the training log (metrics.jsonl), epoch {last.get('epoch', '?')}: one "
        "z-sample per test image, no importance-weighted estimate"
    )


CARD = Template("""---
$meta
---

# $repo_id

A variational autoencoder (Kingma & Welling, 2013, *Auto-Encoding Variational Bayes*) trained
with vaekit. The weights are `model.safetensors` and the architecture and training
configuration are `config.json`: loading runs no code from the files.

$summary

## Use it

```bash
pip install 'vaekit[hub]'
vaekit sample hf://$repo_id --out samples.png
```

```python
import vaekit

model = vaekit.load("hf://$repo_id")  # strict: the weights must fit the config
images = model.sample(16)  # $shape, values in [0, 1]
```

## Evaluation

Source: $source. Nats per example unless noted; a lower negative ELBO and a higher log p(x)
are better, and log p(x), the tighter bound, is the number to compare models by.

$evaluation
$training
$samples
## Configuration

```yaml
$config
```

## Citation

```bibtex
@inproceedings{kingma2014autoencoding,
  title     = {Auto-Encoding Variational Bayes},
  author    = {Kingma, Diederik P. and Welling, Max},
  booktitle = {International Conference on Learning Representations},
  year      = {2014}
}
```
""")
CAPTIONS = {
    "samples.png": "Samples from the prior",
    "reconstructions.png": "Test images (top) and their reconstructions (bottom)",
}


def _table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; `|` inside a cell is escaped."""
    cells = [[str(c).replace("|", "\\|").replace("\n", " ") for c in r] for r in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells]) + "\n"


def _nats(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else ""


def model_card(run_dir: Path, repo_id: str, model: Any, stats: dict[str, Any], source: str) -> str:
    """README.md for the Hub: YAML front matter (library_name, tags) and the run in prose."""
    from ..viz.report import metrics_rows

    cfg = model.run_config
    m, t = cfg.model, cfg.train
    meta: dict[str, Any] = {"library_name": "vaekit", "tags": list(TAGS)}
    meta["pipeline_tag"] = "unconditional-image-generation"
    if cfg.data.name in HUB_DATASETS:
        meta["datasets"] = [HUB_DATASETS[cfg.data.name]]
    c, h, w = model.input_shape
    arch = f"MLP, hidden {m.hidden}" if m.arch == "mlp" else f"convolutional, {m.channels}"
    records = tracking.read_metrics(run_dir)
    last = records[-1] if records else {}
    classes = ", ".join(getattr(model, "class_names", []))
    summary = [
        ["data", f"{cfg.data.name} ({c}x{h}x{w} images)"],
        ["model", f"{arch}; latent dimension {m.latent_dim}; {m.likelihood} likelihood"],
        ["conditional", f"yes, {model.num_classes} classes: {classes}" if m.conditional else "no"],
        ["parameters", f"{sum(p.numel() for p in model.parameters()):,}"],
        [
            "training",
            f"{last.get('epoch', t.epochs)} epochs, {last.get('step', '?')} steps of "
            f"batch {t.batch_size}; {cfg.optim.name}, lr {cfg.optim.lr:g}; beta {cfg.loss.beta:g}",
        ],
        ["vaekit", __version__],
    ]
    evaluation = _table(["metric", "value", ""], [list(r) for r in metrics_rows(stats)])
    training = ""
    if records:
        rows = [
            [
                r.get("epoch", ""),
                _nats(r.get("train_nelbo")),
                _nats(r.get("test_nelbo")),
                r.get("skipped_updates", 0),
            ]
            for r in records[-10:]
        ]
        head = ["epoch", "train -ELBO", "test -ELBO", "skipped updates"]
        training = "## Training\n\n" + _table(head, rows)
    images = [f for f in IMAGE_FILES if (run_dir / f).is_file()]
    samples = "".join(f"\n![{CAPTIONS[f]}]({f})\n\n*{CAPTIONS[f]}.*\n" for f in images)
    return CARD.substitute(
        meta=yaml.safe_dump(meta, sort_keys=False).rstrip(),
        repo_id=repo_id,
        summary=_table(["", ""], summary).rstrip(),
        shape=f"(16, {c}, {h}, {w})",
        source=source,
        evaluation=evaluation if stats else "",
        training=training,
        samples=f"## Samples\n{samples}" if images else "",
        config=cfg.to_yaml().rstrip(),
    )


# -- push ---------------------------------------------------------------------------------------
@dataclass
class PushPlan:
    """What `push` sends: repo file name -> bytes (generated) or a path (from the run)."""

    repo_id: str
    files: dict[str, bytes | Path] = field(default_factory=dict)
    url: str = ""

    def sizes(self) -> dict[str, int]:
        return {
            name: len(v) if isinstance(v, bytes) else v.stat().st_size
            for name, v in self.files.items()
        }


def plan_push(
    run: str | Path,
    repo_id: str,
    *,
    iw_samples: int = 100,
    run_evaluate: bool = True,
    seed: int = 0,
    progress: bool = False,
) -> PushPlan:
    """Check the run loads strictly, evaluate it and write the card; nothing leaves the disk."""
    if str(run).startswith("hf://"):
        raise ConfigError(f"push takes a local run directory, not {run}")
    if iw_samples < 0:
        raise ConfigError(f"--iw-samples must be >= 0; got {iw_samples}")
    check_repo_id(repo_id)
    run_dir = checkpoint.resolve(run)
    model = checkpoint.load(run_dir)  # never upload weights that do not load
    stats, source = _card_stats(run_dir, model, iw_samples, run_evaluate, seed, progress)
    plan = PushPlan(repo_id)
    plan.files[CARD_FILE] = model_card(run_dir, repo_id, model, stats, source).encode("utf-8")
    plan.files[CONFIG_FILE] = run_dir / CONFIG_FILE
    plan.files[MODEL_FILE] = run_dir / MODEL_FILE
    plan.files.update({f: run_dir / f for f in IMAGE_FILES if (run_dir / f).is_file()})
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
) -> PushPlan:
    """Upload a run's model folder and its model card to the Hub repo `repo_id` in one commit.

    Creates the repo if needed (`private` then applies; an existing repo keeps its
    visibility). Authentication is huggingface_hub's: `hf auth login` or HF_TOKEN.
    """
    hub = _client("vaekit push")  # before the evaluation, not after it
    plan = plan_push(
        run, repo_id, iw_samples=iw_samples, run_evaluate=run_evaluate, seed=seed, progress=progress
    )
    api = hub.HfApi(library_name="vaekit", library_version=__version__)
    operations = [
        hub.CommitOperationAdd(
            path_in_repo=name, path_or_fileobj=value if isinstance(value, bytes) else str(value)
        )
        for name, value in plan.files.items()
    ]
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.create_commit(
            repo_id,
            operations,
            repo_type="model",
            commit_message=message or f"Upload a vaekit model (vaekit {__version__})",
        )
    except Exception as e:  # the client raises its HTTP library's errors, OSError, ValueError
        raise VaekitError(
            f"could not push to {repo_id} on the Hugging Face Hub "
            f"({_first_line(e)}); log in with `hf auth login` or set HF_TOKEN, "
            "and check the network"
        ) from None
    plan.url = str(getattr(commit, "commit_url", "") or repo)
    return plan


def describe(plan: PushPlan, stream: Any = None) -> None:
    """Print the files of a plan, one a line, with their sizes."""
    stream = stream or sys.stdout
    for name, size in plan.sizes().items():
        print(f"  {name:22} {size:>12,} bytes", file=stream)
