"""Peak memory (RSS) of `make demo`: training the default preset, then evaluating it.

    python benchmarks/memory.py [--preset fashion-mlp] [--epochs N] [--iw-samples 0]

Runs the two commands `make demo` runs, each in its own process, and reads each one's
peak resident set size from the kernel when it exits (`os.wait4`'s ru_maxrss: the same
figure as `/usr/bin/time -v`'s "Maximum resident set size"). The issue's bound is 2 GB.

Writes benchmarks/results/memory.json and memory.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, write_results  # noqa: E402

LIMIT_MB = 2048


def peak_rss(command: list[str]) -> tuple[float, float]:
    """Run `command`; return (peak RSS in MiB, wall seconds). Fails loudly if it fails."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{err[-2000:]}")
    return usage.ru_maxrss / 1024, seconds  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fashion-mlp")
    parser.add_argument("--epochs", type=int, default=0, help="0: the preset's own")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--iw-samples",
        type=int,
        default=0,
        help="also estimate log p(x) in the evaluation (0: as make demo)",
    )
    args = parser.parse_args()
    info = machine()
    run = Path(tempfile.mkdtemp(prefix="vaekit-memory-")) / "demo"
    vaekit = [sys.executable, "-m", "vaekit"]
    train = [
        *vaekit,
        "train",
        "--config",
        args.preset,
        "--out",
        str(run),
        "--overwrite",
        "--train.progress",
        "false",
    ]
    if args.epochs:
        train += ["--epochs", str(args.epochs)]
    if args.threads:
        train += ["--train.threads", str(args.threads)]
    evaluate = [*vaekit, "evaluate", str(run)]
    if args.iw_samples:
        evaluate += ["--iw-samples", str(args.iw_samples)]
    rows = {}
    for name, command in (("train", train), ("evaluate", evaluate)):
        mib, seconds = peak_rss(command)
        shown = ["RUN" if a.startswith(str(run.parent)) else a for a in command[3:]]
        rows[name] = {
            "command": " ".join(["vaekit", *shown]),
            "peak_rss_mib": round(mib),
            "seconds": round(seconds, 1),
        }
        print(f"{name}: peak RSS {mib:,.0f} MiB in {seconds:.1f} s", flush=True)
    info["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    info["torch_threads"] = args.threads or info["torch_threads"]
    result = {
        "machine": info,
        "limit_mib": LIMIT_MB,
        "processes": rows,
        "within_limit": all(r["peak_rss_mib"] < LIMIT_MB for r in rows.values()),
    }
    table = [["`make demo` step", "peak RSS (MiB)", "wall time (s)"]]
    table += [
        [f"`{r['command']}`", f"{r['peak_rss_mib']:,}", f"{r['seconds']}"] for r in rows.values()
    ]
    notes = [
        f"Peak resident set size of each process (the kernel's ru_maxrss at exit); the "
        f"issue's bound is {LIMIT_MB:,} MiB."
    ]
    md = write_results("memory", result, table, notes)
    print(md.read_text())


if __name__ == "__main__":
    main()
