"""Reconstruction quality on real photographs: vaekit's conv VAE, PyTorch-VAE's VanillaVAE and
PCA, on 64x64 crops of whole held-out photographs, each VAE trained for the same CPU time.

    pip install scikit-image; apt-get install mate-backgrounds   # the photographs
    python benchmarks/photo_quality.py [--budget 300] [--jobs 1] [--only 'NAME;...']
    apt-get install lomiri-wallpapers-16.04   # only for --extra-photos /usr/share/backgrounds

The photographs: scikit-image's colour photographs (astronaut, chelsea, coffee, rocket and
the left image of the motorcycle stereo pair; public domain / CC0, shipped inside the wheel)
and the 12 photographs of Debian's mate-backgrounds (/usr/share/backgrounds/mate/nature,
GPL-2+). Nothing is committed: the script reads them where the packages put them (or from
--photos, an .npz this script wrote with --save-photos). Each is resized (Lanczos) so that
its short side is 192 px, so a 64x64 crop holds a third of it. Four whole photographs are
held out (HELD_OUT); 3,000 training crops come from the other 13 and 600 test crops from
the held-out four, at seeded random positions. --extra-photos DIR adds every .jpg in DIR
to the training photographs (Debian's lomiri-wallpapers-16.04 puts 15 photographs, CC BY-SA,
in /usr/share/backgrounds); --flip appends the training crops mirrored left-right, for every
model, PCA included (twice the crops, the same held-out set).

Each VAE trains in a process of its own on one thread (torch.set_num_threads(1)) for
--budget seconds of that process's CPU time (time.process_time: time-slicing on a shared
machine does not inflate it). vaekit's runs go through `vaekit.Trainer` with a config: a
two-epoch calibration run measures the CPU seconds of an epoch (a callback reads the
clock at each epoch's end) and of what a run pays once (start-up, model.linear_path's
PCA), then train.epochs is set so that the run fits the budget (its schedule needs the
epoch count up front); the reported time is the measured one of the real run. The
VanillaVAE is AntixK/PyTorch-VAE's (benchmarks/conv_speed.py carries it), latent 32, with
that repository's recipe (configs/vae.yaml: Adam lr 0.005, ExponentialLR gamma 0.95 per
epoch, batch 64, kld_weight 0.00025, fp32, images in [-1, 1] for its tanh output), stopped
when its budget is spent.
PCA is fitted on the training crops (numpy SVD). Metrics on the held-out crops: PSNR and
SSIM (vaekit.evaluation.metrics, torchmetrics), LPIPS (vaekit.evaluation.perceptual, VGG)
where its weights are on this machine, else recorded as not measured with the reason.
Writes benchmarks/results/photo_quality.json and .md; --png writes a grid of reconstructions.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_results  # noqa: E402

MATE = Path("/usr/share/backgrounds/mate/nature")
SKIMAGE = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle")
HELD_OUT = ("Dune", "LadyBird", "coffee", "motorcycle")
SHORT_SIDE, CROP, N_TRAIN, N_TEST = 192, 64, 3000, 600

# vaekit's runs: the shapes64 preset's architecture and objective, latent 32, and variants
SHAPES64 = {"model.arch": "conv", "model.channels": [32, 64, 128, 256], "model.latent_dim": 32}
PRESET = {**SHAPES64, "model.blocks_per_level": 0, "model.likelihood": "laplace"}
PRESET |= {"model.obs_scale": 0.1, "optim.lr": 0.003, "optim.schedule": "cosine"}
PRESET |= {"optim.warmup_steps": 50, "train.batch_size": 64, "train.precision": "bf16"}
GAUSS = {**PRESET, "model.likelihood": "gaussian", "model.learn_scale": True}
SPATIAL_32 = {**PRESET, "model.latent_channels": 4, "model.channels": [32, 64, 128]}
VAEKIT_RUNS: dict[str, dict[str, Any]] = {
    "vaekit shapes64, GroupNorm decoder (before the fix)": {
        **PRESET,
        "model.decoder_norm": "group",
    },
    "vaekit shapes64": PRESET,
    "vaekit shapes64, seed objective (L1 + 0.02 KL)": {
        **PRESET,
        "model.obs_scale": 1.0,
        "loss.beta": 0.02,
    },
    "vaekit shapes64, laplace scale 0.05": {**PRESET, "model.obs_scale": 0.05},
    "vaekit shapes64, gaussian learned scale": GAUSS,
    "vaekit shapes64, lr 0.001": {**PRESET, "optim.lr": 0.001},
    "vaekit shapes64, 1 block per level": {**PRESET, "model.blocks_per_level": 1},
    "vaekit shapes64, channels 64-512": {**PRESET, "model.channels": [64, 128, 256, 512]},
    "vaekit gaussian learned scale, 1 block per level": {**GAUSS, "model.blocks_per_level": 1},
    # spatial latents (model.latent_channels): C x 4 x 4 after four levels, C x 8 x 8 after three
    "vaekit spatial 4x4x4": {**PRESET, "model.latent_channels": 4},
    "vaekit spatial 8x4x4": {**PRESET, "model.latent_channels": 8},
    "vaekit spatial 4x8x8": {
        **PRESET,
        "model.latent_channels": 4,
        "model.channels": [64, 128, 256],
    },
    # model.linear_path: a linear encoder/decoder started at PCA of the training crops
    # (global for the vector, per 8x8 patch for the 4x8x8 map), the conv halves beside it
    "vaekit shapes64 + linear path": {**PRESET, "model.linear_path": True},
    "vaekit shapes64 + linear path, gaussian 0.1": {
        **GAUSS,
        "model.learn_scale": False,
        "model.obs_scale": 0.1,
        "model.linear_path": True,
    },
    "vaekit spatial 4x8x8, channels 32-128": SPATIAL_32,
    "vaekit spatial 4x8x8, channels 32-128 + linear path": {
        **SPATIAL_32,
        "model.linear_path": True,
    },
}
PCA_KS = (16, 32, 64, 128, 256)


# -- the photographs ------------------------------------------------------------------------
def load_photos(extra: str = "") -> dict[str, np.ndarray]:
    """name -> (H, W, 3) uint8, resized so that the short side is SHORT_SIDE; `extra`: a
    folder whose .jpg files join them (as training photographs: none is in HELD_OUT)."""
    import skimage.data

    raw: dict[str, np.ndarray] = {}
    for name in SKIMAGE:
        raw[name] = (
            skimage.data.stereo_motorcycle()[0]
            if name == "motorcycle"
            else getattr(skimage.data, name)()
        )
    raw |= read_jpgs(MATE, "apt-get install mate-backgrounds")
    if extra:
        found = read_jpgs(Path(extra), "apt-get install lomiri-wallpapers-16.04")
        raw |= {f"extra/{name}": array for name, array in found.items()}
    return resized(raw)


def read_jpgs(folder: Path, install: str) -> dict[str, np.ndarray]:
    """name (the file's stem) -> (H, W, 3) uint8 of every .jpg in `folder`; `install`: the
    command that puts them there, for the message when there are none."""
    found = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
    if not found:
        raise SystemExit(f"no .jpg in {folder}: {install}")
    return {path.stem: np.asarray(Image.open(path).convert("RGB")) for path in found}


def resized(raw: dict[str, np.ndarray], short_side: int = SHORT_SIDE) -> dict[str, np.ndarray]:
    """Each photograph resized (Lanczos) so that its short side is `short_side`."""
    photos = {}
    for name, array in raw.items():
        image = Image.fromarray(array)
        scale = short_side / min(image.size)
        size = (round(image.width * scale), round(image.height * scale))
        photos[name] = np.asarray(image.resize(size, Image.Resampling.LANCZOS))
    return photos


def crops(photos: list[np.ndarray], n: int, seed: int, size: int = CROP) -> np.ndarray:
    """n random size x size crops, (n, 3, size, size) uint8: a photograph drawn uniformly,
    then a position uniformly inside it."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, 3, size, size), dtype=np.uint8)
    for i in range(n):
        photo = photos[rng.integers(len(photos))]
        top = rng.integers(photo.shape[0] - size + 1)
        left = rng.integers(photo.shape[1] - size + 1)
        out[i] = photo[top : top + size, left : left + size].transpose(2, 0, 1)
    return out


def split(
    photos: dict[str, np.ndarray], n_train: int = N_TRAIN, n_test: int = N_TEST
) -> tuple[np.ndarray, np.ndarray]:
    missing = set(HELD_OUT) - set(photos)
    if missing:
        raise SystemExit(f"held-out photographs missing: {sorted(missing)}")
    train = [p for name, p in sorted(photos.items()) if name not in HELD_OUT]
    test = [photos[name] for name in HELD_OUT]
    return crops(train, n_train, seed=0), crops(test, n_test, seed=1)


# -- metrics --------------------------------------------------------------------------------
def lpips_model() -> tuple[Any, str]:
    """(LPIPS-VGG network, "") where its weights are on this machine, else (None, the
    reason); never downloads (the benchmark machines here have no network)."""
    from vaekit.evaluation import perceptual

    backbone = perceptual.hub_checkpoint("vgg")
    lins = perceptual.lpips_package_file("vgg") or perceptual.lin_checkpoint("vgg")
    missing = [str(p) for p in (backbone, lins) if not p.is_file()]
    if missing:
        return None, f"LPIPS weights not on this machine: {', '.join(missing)}"
    return perceptual.build_perceptual("lpips-vgg", "cpu"), ""


def scores(x: torch.Tensor, recon: torch.Tensor) -> dict[str, Any]:
    """Mean PSNR / SSIM (and LPIPS where possible) of recon against x, both in [0, 1]."""
    from vaekit.evaluation import metrics

    recon = recon.float().clamp(0, 1)
    out: dict[str, Any] = {
        "psnr": float(metrics.psnr(x, recon).mean()),
        "ssim": float(metrics.ssim(x, recon).mean()),
    }
    net, reason = lpips_model()
    if net is None:
        out["lpips"], out["lpips_not_measured"] = None, reason
    else:
        with torch.no_grad():
            out["lpips"] = float(
                torch.cat(
                    [net(recon[i : i + 100], x[i : i + 100]) for i in range(0, len(x), 100)]
                ).mean()
            )
    return out


def save_png(path: str, x: torch.Tensor, rows: list[dict[str, Any]]) -> None:
    """One grid: the first 16 held-out crops, then each model's reconstructions."""
    if not path:
        return
    from vaekit.viz.grid import save_grid

    images = [x[:16]] + [r["first16"].float() / 255.0 for r in rows]
    save_grid(path, torch.cat(images), nrow=16, scale=2)


# -- the models -----------------------------------------------------------------------------
def run_pca(train: np.ndarray, test: np.ndarray) -> list[dict[str, Any]]:
    flat = train.reshape(len(train), -1).astype(np.float64) / 255.0
    mean = flat.mean(0)
    _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
    t = test.reshape(len(test), -1).astype(np.float64) / 255.0
    x = torch.from_numpy(test).float() / 255.0
    rows = []
    for k in PCA_KS:
        recon = (t - mean) @ vt[:k].T @ vt[:k] + mean
        recon_t = torch.from_numpy(recon).float().view_as(x)
        rows.append({"name": f"PCA {k}", "recon": recon_t, "latent_values": k})
    return rows


def epoch_clock() -> Any:
    """A Trainer callback that keeps the process's CPU time at each epoch's end (`.ends`)."""
    import vaekit

    class EpochClock(vaekit.Callback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
            self.ends.append(time.process_time())

    return EpochClock()


def run_vaekit(
    overrides: dict[str, Any], train: np.ndarray, test: np.ndarray, budget: float
) -> dict[str, Any]:
    import vaekit
    from vaekit.config import load_config
    from vaekit.data import Dataset

    data = Dataset("photos", torch.from_numpy(train), torch.from_numpy(test[:64]))
    common = {**overrides, "data.val_fraction": 0.0, "train.progress": False}
    common |= {"train.threads": 1, "train.device": "cpu", "train.seed": 0}
    with tempfile.TemporaryDirectory() as work:
        clock = epoch_clock()
        start = time.process_time()
        cal = {**common, "train.epochs": 2, "train.out": f"{work}/cal"}
        vaekit.Trainer(None, load_config(None, cal), data=data, callbacks=[clock]).fit()
        total = time.process_time() - start
        # the second epoch, its evaluation and saving included; the rest (start-up,
        # model.linear_path's PCA, the end) is paid once
        per_epoch = clock.ends[1] - clock.ends[0]
        once = max(0.0, total - 2 * per_epoch)
        epochs = max(1, int((budget - once) / per_epoch))
        start = time.process_time()
        cfg = {**common, "train.epochs": epochs, "train.out": f"{work}/run"}
        model = vaekit.Trainer(None, load_config(None, cfg), data=data).fit().model
        spent = time.process_time() - start
    x = torch.from_numpy(test).float() / 255.0
    with torch.no_grad():
        recon = torch.cat([model.reconstruct(x[i : i + 200]) for i in range(0, len(x), 200)])
    steps = epochs * -(-len(train) // int(overrides["train.batch_size"]))
    values = int(model.latent_dim)  # C*h*w for a spatial latent
    return {
        "recon": recon,
        "latent_values": values,
        "cpu_s": spent,
        "epochs": epochs,
        "steps": steps,
    }


def run_vanilla(train: np.ndarray, test: np.ndarray, budget: float) -> dict[str, Any]:
    from conv_speed import VanillaVAE

    torch.manual_seed(0)
    model = VanillaVAE(3, 32)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.95)
    images = torch.from_numpy(train).float() / 127.5 - 1.0
    batch, n, steps, epochs = 64, len(images), 0, 0
    start = time.process_time()
    while time.process_time() - start < budget:
        model.train()
        order = torch.randperm(n)
        for i in range(0, n - batch + 1, batch):
            results = model(images[order[i : i + batch]])
            loss = model.loss_function(*results, M_N=0.00025)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            if time.process_time() - start >= budget:
                break
        scheduler.step()
        epochs += 1
    spent = time.process_time() - start
    model.eval()
    x = torch.from_numpy(test).float() / 127.5 - 1.0
    with torch.no_grad():
        recon = torch.cat(
            [model.decode(model.encode(x[i : i + 200])[0]) for i in range(0, len(x), 200)]
        )
    return {
        "recon": (recon + 1.0) / 2.0,
        "cpu_s": spent,
        "epochs": epochs,
        "steps": steps,
        "latent_values": 32,
    }


def job(name: str, train: np.ndarray, test: np.ndarray, budget: float) -> list[dict[str, Any]]:
    """Rows of the table (PCA: one per size): train on one thread, score the held-out crops."""
    torch.set_num_threads(1)
    if name == "PCA":
        outs = run_pca(train, test)
    elif name.startswith("PyTorch-VAE"):
        outs = [{"name": name, "latent_values": 32, **run_vanilla(train, test, budget)}]
    else:
        out = run_vaekit(VAEKIT_RUNS[name], train, test, budget)
        outs = [{"name": name, **out}]
    x = torch.from_numpy(test).float() / 255.0
    rows = []
    for out in outs:
        recon = out.pop("recon").float().clamp(0, 1)
        first16 = (recon[:16] * 255 + 0.5).to(torch.uint8)
        rows.append({**out, **scores(x, recon), "first16": first16})
    return rows


NAMES = ["PCA", "PyTorch-VAE VanillaVAE", *VAEKIT_RUNS]


def result(name: str, future: Any) -> list[dict[str, Any]]:
    """The job's rows, or one row saying why it failed (the other rows still count)."""
    try:
        return list(future.result())
    except Exception as error:  # noqa: BLE001  (a benchmark row, reported as failed)
        print(f"{name} failed: {error!r}", file=sys.stderr, flush=True)
        return []


def table(rows: list[dict[str, Any]]) -> list[list[str]]:
    out = [["model", "latent values", "CPU s", "steps", "PSNR dB", "SSIM", "LPIPS"]]
    for r in rows:
        lpips = "not measured" if r.get("lpips") is None else f"{r['lpips']:.3f}"
        cpu = f"{r['cpu_s']:.0f}" if "cpu_s" in r else "-"
        out.append(
            [
                r["name"],
                str(r["latent_values"]),
                cpu,
                str(r.get("steps", "-")),
                f"{r['psnr']:.2f}",
                f"{r['ssim']:.3f}",
                lpips,
            ]
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=300.0, help="CPU seconds per VAE")
    parser.add_argument("--jobs", type=int, default=1, help="models trained at once")
    parser.add_argument("--only", default="", help="row names separated by ';' (default: all)")
    parser.add_argument("--photos", default="", help="an .npz of resized photographs")
    parser.add_argument("--extra-photos", default="", help="a folder of .jpg training photos")
    parser.add_argument("--flip", action="store_true", help="add mirrored training crops")
    parser.add_argument("--save-photos", default="", help="write the resized photographs here")
    parser.add_argument("--png", default="", help="write a grid of reconstructions here")
    parser.add_argument("--n-train", type=int, default=N_TRAIN, help="training crops")
    parser.add_argument("--n-test", type=int, default=N_TEST, help="held-out crops")
    parser.add_argument("--out", default="", help="results directory (default benchmarks/results)")
    parser.add_argument("--name", default="photo_quality", help="results file name (no suffix)")
    args = parser.parse_args(argv)
    if args.photos:
        with np.load(args.photos) as f:
            photos = {k: f[k] for k in f.files}
    else:
        photos = load_photos(args.extra_photos)
    if args.save_photos:
        np.savez_compressed(args.save_photos, **photos)
    train, test = split(photos, args.n_train, args.n_test)
    if args.flip:
        train = np.concatenate([train, np.ascontiguousarray(train[..., ::-1])])
    names = [n.strip() for n in args.only.split(";") if n.strip()] or NAMES
    unknown = [n for n in names if n not in NAMES]
    if unknown:  # before any model trains (row names hold commas: ';' separates them)
        raise SystemExit(f"unknown rows {unknown}; the rows: {'; '.join(NAMES)}")
    info = machine()
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(job, n, train, test, args.budget) for n in names]
        rows = [row for name, f in zip(names, futures, strict=True) for row in result(name, f)]
    save_png(args.png, torch.from_numpy(test).float() / 255.0, rows)
    for r in rows:
        r.pop("first16")
        print(json.dumps(r), flush=True)
    notes = [
        f"Held-out crops: {len(test)} 64x64 crops of {len(HELD_OUT)} whole photographs "
        f"({', '.join(HELD_OUT)}) that no model saw; training: {len(train)} crops of the other "
        f"{len(photos) - len(HELD_OUT)}{' and their mirror images' if args.flip else ''}. "
        f"Photographs resized to a {SHORT_SIDE} px short side.",
        f"Each VAE: {args.budget:.0f} s of its own process's CPU time (time.process_time) on "
        "one thread; vaekit's epoch count fitted to the budget by a two-epoch calibration "
        "(an epoch's steps, evaluation and saving; start-up and PCA counted once).",
    ]
    kwargs = {"out_dir": Path(args.out)} if args.out else {}
    write_results(
        args.name,
        {"machine": info, "budget_cpu_s": args.budget, "rows": rows, "held_out": list(HELD_OUT)},
        table(rows),
        notes,
        **kwargs,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
