"""What every benchmark here shares: the machine's description and the results files.

Each benchmark writes benchmarks/results/NAME.json (every number, the machine, the
command) and NAME.md (a short table for the README), via `write_results`.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def machine() -> dict[str, Any]:
    """CPU model, cores, torch and Python versions, threads, and the load when measured."""
    model = platform.processor() or "unknown"
    try:
        for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True, timeout=10
        ).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    info: dict[str, Any] = {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    return info


def machine_line(info: dict[str, Any]) -> str:
    gpu = f", {info['cuda']}" if info.get("cuda") else ""
    return (
        f"{info['cpu']}, {info['cores']} cores{gpu}; torch {info['torch']} "
        f"({info['torch_threads']} threads), Python {info['python']}; "
        f"load average {info.get('load_average_1min', '?')} at the start; {info['date']}"
    )


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def write_results(
    name: str,
    result: dict[str, Any],
    table: list[list[str]],
    notes: list[str] = (),
    out_dir: Path = RESULTS,
) -> Path:
    """benchmarks/results/NAME.json (everything) and NAME.md (`table`, its first row the
    header, then `notes` and the machine)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": name,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        **result,
    }
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"| {' | '.join(table[0])} |", f"|{'|'.join('---' for _ in table[0])}|"]
    lines += [f"| {' | '.join(row)} |" for row in table[1:]]
    lines += [
        "",
        *notes,
        "",
        f"Machine: {machine_line(result['machine'])}.",
        f"Command: `python benchmarks/{result['command']}`.",
    ]
    md = out_dir / f"{name}.md"
    md.write_text("\n".join(lines) + "\n")
    return md
