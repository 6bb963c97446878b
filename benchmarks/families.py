"""vaekit's model families against pythae's implementations of the same models, on
Fashion-MNIST, one table.

    make bench-families-deps      # once: pythae 0.1.2 into benchmarks/.pythae (gitignored)
    python benchmarks/families.py [--families all | VAE,IWAE,VQVAE,...] [--budget-s 30]
        [--seeds 1] [--jobs 1] [--iw-samples 1000] [--iw-images 500] [--fid-samples 5000]
        [--prior-samples 1000] [--sides vaekit,pythae]

Each family is trained on both sides with the same networks, started from the same
weights: an MLP 784-512-512-16 (ReLU) and back with Bernoulli pixels (pythae: BCE on the
sigmoid); for the VQ-VAE vaekit's conv net (channels 32, 64, no residual blocks; a 7x7
map of 8-value codes, a codebook of 256) and for WAE-MMD the MLP, both with the squared
error (pythae's only loss for them; vaekit: a Gaussian of variance 1/2, whose -log p(x|z)
is that summed squared error plus a constant). vaekit's side is its `Trainer` on the
config below; pythae's is its `BaseTrainer` (FactorVAE: `AdversarialTrainer`) with its
model class on vaekit's modules (families_pythae.py). Both: Adam at 1e-3, batch 128, all
60,000 training images, fp32, one thread, the same budget of process CPU seconds from the
first step (each side stops at the first step past it; `time.process_time`, which
time-slicing by other processes does not inflate), one side after the other in this
process.

Both sides are evaluated by the same functions here, on the same test images: -ELBO (one
seeded z-sample per image, all 10,000) from each model's `elbo_terms` or, for pythae's
models with parts of their own (VampPrior, IAF), the same bound written out from those
parts; log p(x) by importance sampling (K samples, the first `--iw-images` test images,
logsumexp of the log weights here); PSNR/SSIM of posterior-mean reconstructions
(vaekit.evaluation.metrics); FID of prior samples against test images with vaekit's seeded
random feature network (`--fid random`); active units (Burda et al. 2015: Var_x E[z|x] >
0.01); the VQ-VAE's codebook perplexity and usage (vaekit's codebook_stats, pythae's
trained codebook copied into the twin's quantiser); for the VQ-VAE, a prior over its codes
on each side (families_prior.py: vaekit's by `vaekit.train_prior`, pythae's
`PixelCNNSampler`, the same CPU seconds), its bits per code on the test codes and the FID of
`--prior-samples` images drawn through it. A family vaekit does not have yet is skipped
with the reason, one that fails is listed with its error. `--seeds N` runs each family at
seeds 0..N-1 (mean ± std in the table, families_table.py); `--jobs N` trains N of them at
once, each in a one-thread worker process. Writes benchmarks/results/families.json and .md
(`--name`).
"""

from __future__ import annotations

import argparse
import copy
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vaekit import VaekitError
from vaekit.evaluation.prior import prior_stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
import families_prior as prior  # noqa: E402
import families_pythae as pyt  # noqa: E402
import families_table as tables  # noqa: E402
from common import machine, write_results  # noqa: E402

MSE = {"model.likelihood": "gaussian", "model.obs_scale": math.sqrt(0.5)}  # -log p = SSE + c
CONV_VQ = {
    **MSE,
    "model.arch": "conv",
    "model.channels": [32, 64],
    "model.blocks_per_level": 0,  # no residual blocks: 1/3 of the step's work
    "model.latent_channels": 8,
    "model.posterior": "vq",
    "model.codebook_size": 256,
}
VQ_VALUES = 7 * 7 * 8  # latent values per image: pythae means its VQ losses over them
# z = the encoder's mean (pythae's WAE, vaekit's wae_encoder deterministic): neither side's
# -ELBO or log p(x) means anything, so the table compares reconstructions and samples
POINT_POSTERIOR = ("WAE_MMD",)


@dataclass(frozen=True)
class Family:
    """One row pair: vaekit's config overrides (on top of the base network), pythae's model
    settings (None: pythae has no such model), the base network's overrides."""

    vaekit: dict[str, Any]
    pythae: dict[str, Any] | None
    base: dict[str, Any] = field(default_factory=dict)


FAMILIES: dict[str, Family] = {
    "VAE": Family({}, {}),
    "IWAE": Family({"loss.iw_samples": 5}, {"number_samples": 5}),
    "VQVAE": Family(
        {},  # vaekit sums its codebook and commitment terms over the latent values,
        # pythae means them: its factors times the values make the same objective
        {
            "num_embeddings": 256,
            "commitment_loss_factor": 0.25 * VQ_VALUES,
            "quantization_loss_factor": 1.0 * VQ_VALUES,
        },
        CONV_VQ,
    ),
    "VAMP": Family({"model.prior": "vamp", "model.pseudo_inputs": 50}, {"number_components": 50}),
    "VAE_IAF": Family({"model.posterior": "iaf", "model.flow_steps": 2}, {"n_made_blocks": 2}),
    "BetaTCVAE": Family(
        {"loss.objective": "tcvae", "loss.tc_weight": 6.0, "loss.tc_estimator": "mss"},
        {"beta": 6.0, "alpha": 1.0, "gamma": 1.0, "use_mss": True},
    ),
    "FactorVAE": Family({"loss.objective": "factorvae", "loss.tc_weight": 6.0}, {"gamma": 6.0}),
    "WAE_MMD": Family(
        {
            "loss.objective": "wae_mmd",
            "loss.mmd_weight": 10.0,
            "loss.mmd_kernel": "imq",
            "loss.wae_encoder": "deterministic",
        },
        {"reg_weight": 10.0, "kernel_choice": "imq"},
        MSE,
    ),
    "INFOVAE_MMD": Family(
        {"loss.objective": "infovae", "loss.mmd_weight": 10.0, "loss.info_alpha": 0.0},
        {"alpha": 0.0, "lbd": 10.0, "kernel_choice": "imq"},
    ),
    "hierarchical": Family({"model.posterior": "ladder", "model.latent_dims": [16, 8]}, None),
}
BASE = {
    "data.name": "fashion-mnist",
    "data.val_fraction": 0.0,
    "model.hidden": [512, 512],
    "model.latent_dim": 16,
    "optim.lr": 1e-3,
    "train.batch_size": 128,
    "train.epochs": 10_000,  # a cap: the CPU budget stops training
    "train.threads": 1,
    "train.precision": "fp32",
    "train.progress": False,
    "train.seed": 0,
}


# -- training -----------------------------------------------------------------------------------
def config(family: Family, out: Path, own: bool = True, seed: int = 0) -> Any:
    import vaekit

    overrides = {**BASE, **family.base, **(family.vaekit if own else {}), "train.seed": seed}
    return vaekit.load_config("mnist-mlp", {**overrides, "train.out": str(out)})


def train_vaekit(family: Family, budget_s: float, work: Path, seed: int) -> tuple[Any, dict, dict]:
    """vaekit's Trainer on the family's config until the budget: the model, its weights
    before the first step, and steps, samples and CPU seconds."""
    import vaekit

    clock: dict[str, Any] = {"steps": 0}

    class Budget(vaekit.Callback):
        def on_train_start(self, trainer: Any) -> None:
            clock["init"] = copy.deepcopy(trainer.model.state_dict())
            clock["t0"] = time.process_time()

        def on_step_end(self, trainer: Any) -> bool:
            clock["steps"] += 1
            clock["cpu_s"] = time.process_time() - clock["t0"]
            return bool(clock["cpu_s"] >= budget_s)

    cfg = config(family, work / "vaekit", seed=seed)
    result = vaekit.Trainer(None, cfg, callbacks=[Budget()], overwrite=True).fit()
    steps = clock["steps"]
    stats = {"steps": steps, "samples": steps * cfg.train.batch_size, "cpu_s": clock["cpu_s"]}
    return result.model.eval(), clock["init"], stats


def twin_of(family: Family, init: dict | None, work: Path, seed: int) -> tuple[Any, bool]:
    """The base network (no family options) as a vaekit model, with the weights vaekit's run
    started from where they fit; whether all of them did."""
    from vaekit.models import VAE

    torch.manual_seed(seed)
    cfg = config(family, work / "twin", own=False, seed=seed)
    twin = VAE.from_config(cfg.model, (1, 28, 28))
    own = twin.state_dict()
    if init is None:
        return twin, False
    fits = {k: v for k, v in init.items() if k in own and v.shape == own[k].shape}
    twin.load_state_dict(fits, strict=False)
    return twin, set(fits) == set(own)


def train_pythae(
    name: str, family: Family, twin: Any, budget_s: float, x: torch.Tensor, out: Path, seed: int
) -> dict:
    assert family.pythae is not None
    model, trainer_cls, trainer_config = pyt.build(
        name, twin, family.pythae, BASE["train.batch_size"], BASE["optim.lr"], out
    )
    torch.manual_seed(seed)
    stats = pyt.train(model, trainer_cls, trainer_config, x, budget_s)
    twin.eval()
    if name == "VQVAE":
        pyt.copy_codebook(model, twin)
    stats["pythae_model"] = model
    return stats


# -- the shared evaluation ------------------------------------------------------------------
class Side:
    """What the evaluation reads of a trained model, in the model's units (x in [0, 1]);
    vaekit's models and pythae's twins as they are."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.density = bool(model.has_density)
        # pythae's VampPrior and IAF: families_pythae.PythaeDensity, with the same methods

    def terms(self, x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        terms, _ = self.model.elbo_terms(x, generator=g)
        return terms.recon, terms.kl

    def log_weights(self, x: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
        return self.model.log_importance_weights(x, k, generator=g)  # (K, B)

    def sample(self, n: int, g: torch.Generator) -> torch.Tensor:
        return self.model.sample(n, generator=g)

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.posterior(x)[0]


class PythaeVQ(Side):
    """pythae's VQ-VAE (the twin, with pythae's codebook) and its PixelCNNSampler."""

    def __init__(self, twin: Any, sampler: Any) -> None:
        super().__init__(twin)
        self.sampler = sampler

    def samples(self, n: int) -> torch.Tensor:
        return prior.pythae_samples(self.sampler, n)


@torch.no_grad()
def evaluate(side: Side, x_test: torch.Tensor, args: argparse.Namespace) -> dict[str, Any]:
    from vaekit.evaluation import metrics
    from vaekit.evaluation.codebook import codebook_stats

    x = x_test.float() / 255.0
    out: dict[str, Any] = {}
    started = time.process_time()
    g = torch.Generator().manual_seed(0)
    recon, latent = zip(
        *(side.terms(x[i : i + 1000], g) for i in range(0, len(x), 1000)), strict=True
    )
    if side.density or hasattr(side.model, "quantize"):  # not pythae's WAE: a point mass
        key = "nelbo" if side.density else "objective"
        out[key] = float((torch.cat(recon) + torch.cat(latent)).mean())
    if side.density and args.iw_samples:
        g.manual_seed(1)
        xi = x[: args.iw_images]
        lw = [side.log_weights(xi[i : i + 4], args.iw_samples, g).double() for i in
              range(0, len(xi), 4)]  # fmt: skip
        log_px = torch.logsumexp(torch.cat(lw, 1), 0) - math.log(args.iw_samples)
        out["log_px"] = float(log_px.mean())
        out["log_px_stderr"] = float(log_px.std() / math.sqrt(len(log_px)))
    means = torch.cat([side.mean(x[i : i + 1000]) for i in range(0, len(x), 1000)])
    images = side.model.mean(side.model.decode(means))
    out["psnr"] = float(metrics.psnr(x, images).mean())
    out["ssim"] = float(metrics.ssim(x, images).mean())
    if hasattr(side.model, "quantize"):
        out.update(codebook_stats(side.model, x_test))
    else:
        out["active_units"] = int((means.double().var(0, unbiased=False) > 0.01).sum())
    n = args.prior_samples if hasattr(side.model, "quantize") else args.fid_samples
    if n:
        try:
            g.manual_seed(2)
            if isinstance(side, PythaeVQ):  # its sampler's own loop and RNG
                fake = side.samples(n)
            else:
                fake = torch.cat([side.sample(min(500, n - i), g) for i in range(0, n, 500)])
            out["fid_random"] = metrics.fid_images(x[:n], fake, "random", seed=0)
            out["fid_samples"] = n
        except VaekitError as e:  # a VQ-VAE without a prior over its codes: no samples
            out["fid_random"] = None
            out["no_samples"] = str(e).splitlines()[0]
    out["eval_cpu_s"] = time.process_time() - started
    return out


# -- the run ------------------------------------------------------------------------------------
def run_family(
    name: str, args: argparse.Namespace, data: Any, work: Path, seed: int
) -> dict[str, Any]:
    family = FAMILIES[name]
    row: dict[str, Any] = {"family": name, "seed": seed}
    init = None
    vq = name == "VQVAE"
    if "vaekit" in args.sides:
        print(f"[{name} seed {seed}] vaekit: training for {args.budget_s} CPU-s", file=sys.stderr)
        try:
            model, init, stats = train_vaekit(family, args.budget_s, work, seed)
        except VaekitError as e:
            row["vaekit_skipped"] = f"vaekit cannot train {name} (not merged yet?): {e}"
            print(f"[{name}] skipped: {row['vaekit_skipped']}", file=sys.stderr)
            return row
        if vq and args.prior_samples:
            print(f"[{name}] vaekit: code prior for {args.budget_s} CPU-s", file=sys.stderr)
            stats.update(prior.train_vaekit_prior(model, data.x_train, args.budget_s, work))
            stats.update(prior_stats(model, data.x_test))
        side: Any = Side(model)
        side.density = side.density and name not in POINT_POSTERIOR
        row["vaekit"] = {**stats, **evaluate(side, data.x_test, args)}
    if "pythae" in args.sides and family.pythae is not None:
        twin, same_init = twin_of(family, init, work, seed)
        print(f"[{name} seed {seed}] pythae: training for {args.budget_s} CPU-s", file=sys.stderr)
        stats = train_pythae(name, family, twin, args.budget_s, data.x_train, work / "pythae", seed)
        p = stats.pop("pythae_model")
        side = Side(twin)
        if name in ("VAMP", "VAE_IAF"):
            side = pyt.PythaeDensity(twin, p, "iaf" if name == "VAE_IAF" else "vamp")
        if vq and args.prior_samples:  # the same images and CPU seconds as vaekit's prior
            v = row.get("vaekit", {})
            n, budget = v.get("prior_images", 10_000), v.get("prior_cpu_s", args.budget_s)
            print(f"[{name}] pythae: PixelCNNSampler for {budget:.1f} CPU-s", file=sys.stderr)
            sampler, more = prior.train_pythae_prior(p, data.x_train, n, budget, work / "pixelcnn")
            stats.update({**more, **prior.pythae_prior_stats(sampler, p, data.x_test)})
            side = PythaeVQ(twin, sampler)
        side.density = side.density and name not in POINT_POSTERIOR
        row["pythae"] = {**stats, "same_init": same_init, **evaluate(side, data.x_test, args)}
    return row


def _job(job: tuple[str, int, argparse.Namespace, Any, Path]) -> tuple[dict[str, Any], list]:
    """One family at one seed (a row, or its error), and the load average after it."""
    name, seed, args, data, work = job
    torch.set_num_threads(1)
    try:
        row = run_family(name, args, data, work, seed)
    except Exception as e:  # the other families' rows still get written
        traceback.print_exc()
        row = {"family": name, "seed": seed, "error": f"{type(e).__name__}: {e}"}
    return row, [round(v, 2) for v in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="all", help=f"all, or some of {', '.join(FAMILIES)}")
    parser.add_argument("--budget-s", type=float, default=30.0, help="CPU seconds per side")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 of each family")
    parser.add_argument("--iw-samples", type=int, default=1000)
    parser.add_argument("--iw-images", type=int, default=500)
    parser.add_argument("--fid-samples", type=int, default=5000)
    parser.add_argument(
        "--prior-samples", type=int, default=1000, help="VQ-VAE: samples of each code prior"
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="families trained at once, one process each"
    )
    parser.add_argument("--sides", default="vaekit,pythae")
    parser.add_argument("--name", default="families")
    args = parser.parse_args()
    names = [n.strip() for n in args.families.split(",") if n.strip()]
    names = list(FAMILIES) if names == ["all"] else names
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        parser.error(f"unknown families {unknown}; known: all, {', '.join(FAMILIES)}")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    if "pythae" in args.sides:
        pyt.import_pythae()
    from vaekit.data import load_data

    info = machine()
    data = load_data(config(FAMILIES["VAE"], Path("unused")).data, progress=False)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="vaekit-bench-families-"))
    jobs = [
        (n, seed, args, data, work / f"{n}-{seed}") for n in names for seed in range(args.seeds)
    ]
    try:
        if args.jobs > 1:  # worker processes, one thread each: the budget is CPU time
            context = multiprocessing.get_context("fork")  # they inherit the data and pythae
            with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
                done = list(pool.map(_job, jobs))
        else:
            done = [_job(job) for job in jobs]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [row for row, _ in done]
    info["load_average_per_family"] = [[r["family"], r["seed"], load] for r, load in done]
    info["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    result = {"machine": info, "settings": vars(args), "base": BASE, "rows": rows,
              "wall_s": time.perf_counter() - started}  # fmt: skip
    try:
        table, notes = tables.table(rows, args), tables.notes(result)
    except Exception:  # keep the measurements: the .json is written with the error as its table
        table, notes = [["table failed"], [traceback.format_exc(limit=1)]], []
    print(write_results(args.name, result, table, notes))


if __name__ == "__main__":
    main()
