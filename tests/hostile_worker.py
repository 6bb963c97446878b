"""The hostile harness's worker: runs `vaekit` commands in-process, one per line of stdin,
under a memory limit and a per-case timeout, and reports how each ended.

Started by tests/test_hostile.py as `python hostile_worker.py MEMORY_BYTES`. Each stdin
line is a JSON case {"id", "argv", "cwd", "timeout", "check"}; each stdout line a JSON
result {"id", "code", "stderr", "outcome", "detail", "seconds"} where outcome is one of:

- "ok": exit 0 (and, for "check": "run", a run directory whose model loads with finite
  weights), or a non-zero exit with exactly one line on stderr and no traceback;
- "traceback": an exception escaped the command, or stderr held more than one line;
- "hang": the case ran past its timeout;
- "memory": MemoryError (the limit was hit without a clear message);
- "damaged": exit 0 but the run it wrote does not load.

A crash (a segfault, or the kernel killing the worker) ends the process: the harness sees
no result for the case and calls it "crash".
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any


class CaseTimeout(BaseException):
    """Raised by SIGALRM: a BaseException, so that no `except Exception` can swallow it."""


def _alarm(signum: int, frame: Any) -> None:
    raise CaseTimeout


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    import torch

    from vaekit.cli import main

    threads = torch.get_num_threads()
    out, err = io.StringIO(), io.StringIO()
    code: int | None = None
    outcome, detail = "ok", ""
    here = os.getcwd()
    started = time.perf_counter()
    signal.alarm(int(case.get("timeout", 30)))
    try:
        os.chdir(case["cwd"])
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(case["argv"])
            except SystemExit as e:  # argparse
                code = e.code if isinstance(e.code, int) else 1
    except CaseTimeout:
        outcome = "hang"
    except MemoryError:
        outcome, detail = "memory", traceback.format_exc(limit=-3)
    except Exception:
        outcome, detail = "traceback", traceback.format_exc(limit=-6)
    finally:
        signal.alarm(0)
        os.chdir(here)
        torch.set_num_threads(threads)  # a case may change it for itself only
    stderr = err.getvalue()
    lines = [
        line for line in stderr.splitlines() if line.strip() and not line.startswith("vaekit: ")
    ]
    if outcome == "ok" and code not in (0, None):
        if len(lines) != 1 or "Traceback" in stderr:
            outcome, detail = "traceback", stderr[-3000:]
    if outcome == "ok" and code == 0 and case.get("check") == "run":
        outcome, detail = _check_run(Path(case["cwd"]) / case["run"])
    return {
        "id": case["id"],
        "code": code,
        "stderr": stderr[-2000:],
        "outcome": outcome,
        "detail": detail,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _check_run(run: Path) -> tuple[str, str]:
    """A run that says it succeeded must load, with finite weights."""
    import torch

    import vaekit

    try:
        model = vaekit.load(run)
    except Exception as e:  # noqa: BLE001 (any failure here means a damaged run)
        return "damaged", f"{type(e).__name__}: {e}"
    if not all(torch.isfinite(v).all() for v in model.state_dict().values()):
        return "damaged", "non-finite weights"
    return "ok", ""


def main() -> None:
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
    signal.signal(signal.SIGALRM, _alarm)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    results = os.fdopen(os.dup(1), "w", buffering=1)  # the real stdout, kept for results
    for line in sys.stdin:
        if line.strip():
            results.write(json.dumps(run_case(json.loads(line))) + "\n")


if __name__ == "__main__":
    main()
