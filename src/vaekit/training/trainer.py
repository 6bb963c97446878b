"""The training loop: one readable function, `train(config) -> run directory`."""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

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
from .optim import OPTIMIZERS

T = TypeVar("T")
SYNC_EVERY = 25  # steps between reads of the step records (the only host syncs on GPU)
RUN_FILES = (
    "config.yaml",
    checkpoint.CONFIG_FILE,
    checkpoint.MODEL_FILE,
    checkpoint.STATE_FILE,
    "metrics.jsonl",
    "samples.png",
    "reconstructions.png",
    "report.html",
    # pictures of `vaekit report` and the picture commands (figures.FILES)
    "interpolation.png",
    "interpolation_linear.png",
    "interpolation_slerp.png",
    "manifold.png",
    "latents.png",
    "curves.png",
    "kl.png",
)


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


# -- distributed: torchrun sets RANK / WORLD_SIZE / LOCAL_RANK ------------------------------
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1 and "RANK" in os.environ

    @property
    def main(self) -> bool:
        return self.rank == 0

    def setup(self, device: torch.device) -> torch.device:
        if not self.enabled:
            return device
        import torch.distributed as td

        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        if not td.is_initialized():
            td.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return device

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if `flag` is true on any rank."""
        if not self.enabled:
            return flag
        import torch.distributed as td

        t = torch.tensor([1.0 if flag else 0.0], device=device)
        td.all_reduce(t, op=td.ReduceOp.MAX)
        return bool(t.item() > 0)

    def max_(self, t: torch.Tensor) -> torch.Tensor:
        """t, in place, as its elementwise maximum over the ranks."""
        if self.enabled:
            import torch.distributed as td

            td.all_reduce(t, op=td.ReduceOp.MAX)
        return t

    def mean_(self, t: torch.Tensor) -> torch.Tensor:
        """t, in place, as its mean over the ranks (equal shards: the global-batch mean)."""
        if self.enabled:
            import torch.distributed as td

            td.all_reduce(t, op=td.ReduceOp.SUM)
            t /= self.world
        return t

    def share(self, make: Callable[[], T]) -> T:
        """make() run on rank 0 only; every rank gets its result, or raises its error."""
        if not self.enabled:
            return make()
        import torch.distributed as td

        box: list[Any] = [None]
        if self.main:
            try:
                box[0] = make()
            except VaekitError as e:
                box[0] = e
        td.broadcast_object_list(box, src=0)
        if isinstance(box[0], VaekitError):
            raise box[0]
        return box[0]

    def teardown(self, finished: bool = False) -> None:
        """Leave the process group; `finished` ranks first wait for each other."""
        if self.enabled:
            import gc

            import torch.distributed as td

            if td.is_initialized():
                if finished:  # rank 0 may still be writing; leave together
                    td.barrier()
                gc.collect()  # free the DDP reducer (and its hold on the group) first
                td.destroy_process_group()


# -- signals: the handler only sets a flag; the loop saves at the next step boundary --------
class StopFlag:
    def __init__(self) -> None:
        self.signum = 0

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopFlag]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: Any) -> None:
            self.signum = signum

        for s in previous:
            signal.signal(s, handler)
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


# -- run directory --------------------------------------------------------------------------
def prepare_run_dir(config: Config, resume: bool, overwrite: bool) -> Path:
    out = config.train.out or f"runs/{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is a file; choose a directory")
    holds_run = run_dir.is_dir() and any((run_dir / f).exists() for f in RUN_FILES)
    if run_dir.is_dir() and (resume or overwrite):  # left by a killed run; never loaded
        for stale in run_dir.glob(f"{fileio.TMP_PREFIX}*"):
            stale.unlink(missing_ok=True)
    if resume:
        if not (run_dir / checkpoint.STATE_FILE).is_file():
            raise ConfigError(
                f"--resume: {run_dir} holds no resume state "
                f"({checkpoint.STATE_FILE}); start it without --resume"
            )
    elif holds_run:
        if not overwrite:
            raise ConfigError(
                f"--out {run_dir} already holds a run; pass --resume to continue "
                "it, --overwrite to replace it, or choose another --out"
            )
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
        for name in ("tensorboard", "wandb", "images"):
            shutil.rmtree(run_dir / name, ignore_errors=True)
    return run_dir


def make_optimizer(
    model: torch.nn.Module, config: Config, device: torch.device
) -> torch.optim.Optimizer:
    o = config.optim
    params = [p for p in model.parameters() if p.requires_grad]
    kwargs: dict[str, Any] = {"lr": o.lr, "weight_decay": o.weight_decay}
    if o.fused:
        try:  # fused kernels: one launch for all parameters (measured faster on CPU too)
            return OPTIMIZERS[o.name](params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            pass
    return OPTIMIZERS[o.name](params, **kwargs)


def _grad_norm(params: list[torch.nn.Parameter], clip: float) -> torch.Tensor:
    """The total gradient norm, left on the device; clips the gradients to it when > 0."""
    if clip > 0:
        return torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
    grads = [p.grad for p in params if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads, foreach=True)  # no multiply-by-1 pass


def make_schedule(
    optimizer: torch.optim.Optimizer, config: Config, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    import math

    warm, kind = config.optim.warmup_steps, config.optim.schedule

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if kind == "cosine":
            progress = min(1.0, (step - warm) / max(1, total_steps - warm))
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class WeightAverage:
    """An exponential moving average of a model's weights (Polyak averaging).

    `model` is the averaged copy: what a run evaluates, draws its images from and saves.
    `decay` is per step, ramped up as min(decay, (1 + n) / (10 + n)) after n steps so that
    early on the average follows the weights instead of remembering their random start.
    It moves every EVERY steps, by decay ** EVERY: the same average within a few steps, at
    a quarter of the memory traffic (a full pass over the weights costs ~0.3 ms, 5-10% of
    a `fashion-mlp` step); `sync` folds in the steps since, before the average is used.
    A skipped (non-finite) update leaves the weights as they were, so averaging them is
    harmless.
    """

    EVERY = 4

    def __init__(self, model: VAE, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.steps = 0  # optimizer steps counted
        self.moved = 0  # of which folded into the average
        self._mine: list[torch.Tensor] = list(self.model.parameters())
        self._theirs: list[torch.Tensor] = list(model.parameters())
        self._buffers = (list(self.model.buffers()), list(model.buffers()))

    def update(self) -> None:
        """Count one optimizer step; every EVERY steps, move the average."""
        self.steps += 1
        if self.steps - self.moved >= self.EVERY:
            self.sync()

    @torch.no_grad()
    def sync(self) -> None:
        """Fold the steps counted since the last move into the average."""
        pending = self.steps - self.moved
        if not pending:
            return
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps)) ** pending
        torch._foreach_lerp_(self._mine, self._theirs, 1.0 - decay)  # as swa_utils does
        for mine, theirs in zip(*self._buffers, strict=True):
            mine.copy_(theirs)
        self.moved = self.steps

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "steps": self.steps, "moved": self.moved}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.steps, self.moved = int(state["steps"]), int(state["moved"])


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> 'bf16' where bf16 matmuls run natively (faster than fp32), else 'fp32'."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    try:  # emulated bf16 (no AMX / AVX512-BF16) is slower than fp32
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return "fp32"
    return "bf16" if "amx_bf16" in flags or "avx512_bf16" in flags else "fp32"


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    state: dict[str, Any] = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(generator: torch.Generator, state: dict[str, Any]) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


_RESUME_FREE = (
    "train.epochs",
    "train.out",
    "train.progress",
    "train.tracker",
    "train.checkpoint_every",
    "train.eval_every",
    "train.run_name",
    "train.log_images_every",
    "train.max_skipped",
    "train.threads",
    "model.init_output_bias",  # acts before the first step only; a resumed run loads weights
)


def _check_resume_config(saved: dict[str, Any], config: Config, run_dir: Path) -> None:
    now = config.to_dict()
    # an option added after the run was saved is missing there: it had the default's effect
    defaults = Config().to_dict()
    diffs = []
    for section, values in now.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            dotted = f"{section}.{key}"
            before = saved.get(section, {}).get(key, defaults[section][key])
            if dotted not in _RESUME_FREE and before != value:
                diffs.append(f"{dotted}: {before!r} -> {value!r}")
    if diffs:
        raise ConfigError(
            f"--resume: the config differs from the run in {run_dir} ("
            f"{'; '.join(diffs[:6])}); resume with the run's own config.yaml"
        )


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
        _check_resume_config(state["config"], config, run_dir)
        checkpoint.check_state_dict(model, state["model"], str(state_path))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if average is not None:
            average.load_state_dict(state["ema"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(generator, state["rng"])
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
                "rng": _rng_state(generator),
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
                with _autocast(device, precision):
                    terms = net(x, y, global_step, generator, shard)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(terms.loss).backward()
                scaler.unscale_(optimizer)
                grad_norm = _grad_norm(params, config.optim.grad_clip)
                # 1.0 when the loss or the gradient is not finite: then no update may happen
                bad = dist.max_((~torch.isfinite(terms.loss.detach() + grad_norm)).float())
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
                        [terms.loss.detach(), terms.nelbo, terms.recon, terms.kl, grad_norm, bad]
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
