"""The training loop: one readable function, `train(config) -> run directory`."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .. import objectives
from ..config import Config, validate
from ..data import Dataset, batch_indices, epoch_permutation, load_data, to_float
from ..data.dataset import gather, mean_image, resident
from ..errors import ConfigError, DataError, TrainingDiverged, TrainingInterrupted, VaekitError
from ..evaluation.evaluate import elbo_stats
from ..io import checkpoint, fileio
from ..models import VAE
from ..tracking import Tracker
from ..viz import grid as viz
from .distributed import Dist
from .interrupt import StopFlag
from .optim import WeightAverage, grad_norm, make_optimizer, make_schedule
from .precision import autocast, resolve_precision
from .rundir import prepare_run_dir
from .state import check_resume_config, rng_state, set_rng_state

SYNC_EVERY = 25  # steps between reads of the step records (the only host syncs on GPU)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"config key 'train.device' has unknown device {name!r}; use cpu, cuda, cuda:N or auto"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"--device {name} was asked for but CUDA is not available here; "
            "use --device cpu or auto"
        )
    return device


def check_data(data: Dataset, config: Config) -> None:
    """Refuse data a model cannot use, before any training step."""
    for name, x in (("x_train", data.x_train), ("x_test", data.x_test)):
        if x.dtype != torch.uint8:
            raise DataError(f"{data.name}:{name} must be stored as uint8 images")
        if x.shape[0] == 0:
            raise DataError(f"{data.name}:{name} holds no images")
    if config.model.conditional and data.y_train is None:
        raise DataError(f"model.conditional needs labels, but {data.name} has none")
    if (
        data.y_train is not None
        and data.num_classes
        and int(data.y_train.max()) >= data.num_classes
    ):
        raise DataError(
            f"{data.name}: label {int(data.y_train.max())} is out of range for "
            f"{data.num_classes} classes"
        )


def train(
    config: Config, *, resume: bool = False, overwrite: bool = False, data: Dataset | None = None
) -> Path:
    """Train a VAE as `config` says and return its run directory.

    The run directory holds config.yaml, metrics.jsonl, config.json + model.safetensors,
    the resumable state.pt, and sample and reconstruction PNGs. SIGINT/SIGTERM save the
    state at the next step boundary and raise `TrainingInterrupted`.
    """
    config = validate(config)
    dist = Dist()
    t = config.train
    if t.threads:
        torch.set_num_threads(t.threads)
    if t.batch_size % dist.world:
        raise ConfigError(
            f"train.batch_size {t.batch_size} must be divisible by the {dist.world} processes"
        )
    device = dist.setup(resolve_device(t.device))
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # denormals cost ~100x on x86; measured in benchmarks/
    if t.precision == "fp16" and device.type != "cuda":
        dist.teardown()
        raise ConfigError("train.precision fp16 needs CUDA; use bf16 on the CPU")
    # rank 0 names and prepares the run directory (its default name has a timestamp)
    run_dir = dist.share(lambda: prepare_run_dir(config, resume, overwrite))
    show = t.progress and dist.main
    try:
        if data is None:
            data = load_data(config.data, seed=t.seed, progress=show)
        check_data(data, config)
        run = _train(config, data, run_dir, device, dist, resume, show)
        dist.teardown(finished=True)
        return run
    except RuntimeError as e:  # torch.OutOfMemoryError is a RuntimeError too
        if not _is_out_of_memory(e):
            raise
        raise VaekitError(
            f"out of memory on {device} with --batch-size {t.batch_size}: try a "
            f"smaller batch (e.g. --batch-size {max(1, t.batch_size // 2)}) or a "
            "smaller model; the last saved checkpoint is kept"
        ) from None
    finally:
        dist.teardown()


def _is_out_of_memory(error: RuntimeError) -> bool:
    text = str(error).lower()
    return isinstance(error, torch.OutOfMemoryError) or any(
        s in text for s in ("out of memory", "not enough memory", "can't allocate memory")
    )


def _train(
    config: Config,
    data: Dataset,
    run_dir: Path,
    device: torch.device,
    dist: Dist,
    resume: bool,
    show: bool,
) -> Path:
    t = config.train
    torch.manual_seed(t.seed)
    model = VAE(config.model, data.shape, data.num_classes if config.model.conditional else 0)
    if config.model.init_output_bias and not resume:  # (a resumed run loads its weights)
        model.init_output_bias(mean_image(data.x_train))
    model.to(device)
    if config.model.arch == "conv":
        # Module.to(memory_format=) works but is missing from torch's type stubs
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = make_optimizer(model, config, device)
    average = WeightAverage(model, config.optim.ema) if config.optim.ema else None
    shown = average.model if average else model  # what is evaluated, drawn from and saved
    n_train = data.x_train.shape[0]
    steps_per_epoch = len(batch_indices(torch.arange(n_train), t.batch_size))
    schedule = make_schedule(optimizer, config, steps_per_epoch * t.epochs)
    precision = resolve_precision(t.precision, device)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    generator = torch.Generator(device=device).manual_seed(t.seed)
    perceptual = None
    if config.loss.perceptual != "none":  # imported only when asked for
        from ..evaluation.perceptual import from_config

        perceptual = from_config(config.loss, device, seed=t.seed)

    start_epoch, start_step, global_step, skipped_total = 0, 0, 0, 0
    state_path = run_dir / checkpoint.STATE_FILE
    if resume:
        state = checkpoint.load_state(state_path)
        check_resume_config(state["config"], config, run_dir)
        checkpoint.check_state_dict(model, state["model"], str(state_path))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if average is not None:
            average.load_state_dict(state["ema"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        set_rng_state(generator, state["rng"])
        start_epoch, start_step = int(state["epoch"]), int(state["step_in_epoch"])
        global_step, skipped_total = int(state["global_step"]), int(state["skipped_updates"])
        if start_epoch >= t.epochs:
            raise ConfigError(
                f"--resume: the run in {run_dir} already finished {start_epoch} "
                f"epochs; raise --epochs to train further"
            )
        if show:
            print(
                f"resuming {run_dir} at epoch {start_epoch + 1}, step {start_step}", file=sys.stderr
            )

    # the objective is a module so that DDP wraps the whole forward pass (and its hooks)
    net: torch.nn.Module = objectives.Objective(model, config.loss, perceptual)
    if dist.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    shard = (dist.rank, dist.world) if dist.enabled else None

    if dist.main:
        fileio.write_text(run_dir / "config.yaml", config.to_yaml())
    tracker = Tracker(run_dir, config, enabled=dist.main, resume=resume)
    x_train = resident(data.x_train, device)  # moved once when it fits; gathered there
    y_train = data.y_train.to(x_train.device) if data.y_train is not None else None
    binarize = config.data.binarize == "dynamic"
    params = [p for p in model.parameters() if p.requires_grad]
    # on a GPU, reading the skip flag every step would stall the queue: fused kernels take
    # it as a tensor (found_inf) instead; on the CPU reading it is free, found_inf is not
    skip_on_device = (
        device.type != "cpu" and bool(optimizer.defaults.get("fused")) and not scaler.is_enabled()
    )
    consecutive_skips = 0
    pending: list[torch.Tensor] = []  # per-step records still on the device
    sums = [0.0] * 5  # this epoch's nelbo, recon, kl, grad norm, applied updates
    bar = tqdm(disable=True)

    def flush() -> None:
        """Read the pending steps' records (one sync): sums, skipped updates, divergence."""
        nonlocal skipped_total, consecutive_skips
        if not pending:
            return
        rows = dist.mean_(torch.stack(pending).double()).tolist()  # global-batch means
        pending.clear()
        skipped = 0
        for i, (_loss, nelbo, recon, kl, norm, bad) in enumerate(rows):
            if not bad:
                consecutive_skips = 0
                for j, v in enumerate((nelbo, recon, kl, norm, 1.0)):
                    sums[j] += v
                continue
            skipped += 1  # never written into the weights (openai/vdvae's guard)
            consecutive_skips += 1
            if consecutive_skips >= t.max_skipped:
                bar.close()
                tracker.close()
                raise TrainingDiverged(
                    f"training diverged: {consecutive_skips} consecutive non-finite updates "
                    f"up to step {global_step - len(rows) + i + 1}; the last good checkpoint "
                    f"in {run_dir} is kept. Lower --lr or set optim.grad_clip"
                )
        skipped_total += skipped
        if skipped and skip_on_device:  # the schedule counts applied updates only
            schedule.last_epoch -= skipped + 1
            schedule.step()
        bar.update(len(rows))
        if show:
            rate = (bar.n - first) * t.batch_size / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix(loss=f"{rows[-1][0]:.2f}", samples_s=f"{rate:,.0f}", refresh=False)

    def save_state(epoch: int, step_in_epoch: int) -> None:
        flush()
        if not dist.main:
            return
        checkpoint.save_state(
            state_path,
            {
                "format": 1,
                "config": config.to_dict(),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "scaler": scaler.state_dict(),
                **({"ema": average.state_dict()} if average else {}),
                "rng": rng_state(generator),
                "epoch": epoch,
                "step_in_epoch": step_in_epoch,
                "global_step": global_step,
                "skipped_updates": skipped_total,
            },
        )

    stop = StopFlag()
    with stop.installed():
        for epoch in range(start_epoch, t.epochs):
            order = epoch_permutation(n_train, t.seed, epoch).to(x_train.device)
            batches = batch_indices(order, t.batch_size)
            first = start_step if epoch == start_epoch else 0
            model.train()
            sums[:] = [0.0] * 5
            started = time.perf_counter()
            bar = tqdm(
                total=len(batches),
                initial=first,
                disable=not show,
                leave=False,
                desc=f"epoch {epoch + 1}/{t.epochs}",
                unit="step",
            )
            step_in_epoch = first
            for step_in_epoch in range(first, len(batches)):
                if dist.any(stop.signum != 0, device):
                    save_state(epoch, step_in_epoch)
                    bar.close()
                    tracker.close()
                    code = 128 + (stop.signum or signal.SIGINT)
                    raise TrainingInterrupted(
                        f"interrupted at epoch {epoch + 1}, step {step_in_epoch}; state saved "
                        f"in {run_dir}. Resume with: vaekit train --config "
                        f"{run_dir / 'config.yaml'} --out {run_dir} --resume",
                        code,
                    )
                idx = batches[step_in_epoch]
                x = gather(x_train, idx, device)  # (B, C, H, W) float in [0, 1]
                if binarize:
                    x = torch.bernoulli(x, generator=generator)
                y = y_train[idx].to(device) if y_train is not None else None
                if dist.enabled:  # this rank's disjoint shard, binarized as one process would
                    x = x[dist.rank :: dist.world]
                    y = y[dist.rank :: dist.world] if y is not None else None
                with autocast(device, precision):
                    terms = net(x, y, global_step, generator, shard)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(terms.loss).backward()
                scaler.unscale_(optimizer)
                norm = grad_norm(params, config.optim.grad_clip)
                # 1.0 when the loss or the gradient is not finite: then no update may happen
                bad = dist.max_((~torch.isfinite(terms.loss.detach() + norm)).float())
                if skip_on_device:
                    optimizer.found_inf = bad  # type: ignore[attr-defined]
                    optimizer.step()
                    schedule.step()  # flush() takes back the steps that turn out skipped
                    if average is not None:
                        average.update()
                elif not bad.item():  # CPU, unfused optimizers, fp16's scaler
                    scaler.step(optimizer)
                    schedule.step()  # the schedule counts applied updates
                    if average is not None:
                        average.update()
                scaler.update()
                pending.append(
                    torch.stack(
                        [terms.loss.detach(), terms.nelbo, terms.recon, terms.kl, norm, bad]
                    )
                )
                global_step += 1
                if t.checkpoint_every and global_step % t.checkpoint_every == 0:
                    save_state(epoch, step_in_epoch + 1)
                elif len(pending) >= SYNC_EVERY:
                    flush()
                if (
                    t.log_images_every and global_step % t.log_images_every == 0 and tracker.active
                ):  # trackers only: metrics.jsonl stays one line per epoch
                    tracker.log_scalars(
                        {
                            k: float(getattr(terms, k).detach())
                            for k in ("loss", "nelbo", "recon", "kl")
                        },
                        global_step,
                    )
                    tracker.log_images(write_images(shown, data, run_dir, seed=t.seed), global_step)
                    model.train()
            flush()
            bar.close()
            seconds = time.perf_counter() - started
            if average is not None:  # at every epoch's end: resumed runs stay bit-identical
                average.sync()
            done = sums[4]
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "step": global_step,
                "seconds": seconds,
                "samples_per_s": (len(batches) - first) * t.batch_size / max(seconds, 1e-9),
                "train_nelbo": sums[0] / done if done else float("nan"),
                "train_recon": sums[1] / done if done else float("nan"),
                "train_kl": sums[2] / done if done else float("nan"),
                "train_grad_norm": sums[3] / done if done else float("nan"),
                "skipped_updates": skipped_total,
                "lr": schedule.get_last_lr()[0],
            }
            if dist.main and ((epoch + 1) % t.eval_every == 0 or epoch + 1 == t.epochs):
                model.eval()
                test = elbo_stats(
                    shown,
                    data.x_test,
                    data.y_test if model.conditional else None,
                    t.eval_batch_size,
                    seed=t.seed,
                )
                record.update({f"test_{k}": v for k, v in test.items()})
            if dist.main:
                tracker.log_epoch(record)
                checkpoint.save_model(run_dir, shown, config, data.class_names)
                save_state(epoch + 1, 0)
                if show:
                    test_part = (
                        f", test -ELBO {record['test_nelbo']:.2f}" if "test_nelbo" in record else ""
                    )
                    print(
                        f"epoch {epoch + 1}/{t.epochs}: train -ELBO "
                        f"{record['train_nelbo']:.2f}{test_part} nats, "
                        f"{record['samples_per_s']:,.0f} samples/s",
                        file=sys.stderr,
                    )
                images = write_images(shown, data, run_dir, seed=t.seed)
                tracker.log_images(images, global_step)
    tracker.close()
    return run_dir


@torch.no_grad()
def write_images(
    model: VAE, data: Dataset, run_dir: Path, seed: int = 0, n: int = 64
) -> dict[str, Any]:
    """samples.png (prior samples) and reconstructions.png (originals above, recons below)."""
    model.eval()
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    y = None
    if model.conditional:
        y = torch.arange(n, device=device) % max(1, model.num_classes)
    samples = model.sample(n, y, generator=g)
    k = min(8, data.x_test.shape[0])
    x = to_float(data.x_test[:k].to(device))
    yk = data.y_test[:k].to(device) if model.conditional and data.y_test is not None else None
    recon = model.reconstruct(x, yk)
    scale = viz.auto_scale(model.input_shape[1])
    grid_samples = viz.make_grid(samples, nrow=8)
    grid_recon = viz.make_grid(torch.cat([x, recon]), nrow=k)
    fileio.write_bytes(run_dir / "samples.png", viz.png_bytes(viz.to_pil(grid_samples, scale)))
    fileio.write_bytes(
        run_dir / "reconstructions.png", viz.png_bytes(viz.to_pil(grid_recon, scale))
    )
    return {"samples": grid_samples, "reconstructions": grid_recon}


__all__ = ["VaekitError", "train", "write_images"]
