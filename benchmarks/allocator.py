"""What `vaekit.allocator.tune_malloc` (which the `vaekit` command calls) is worth.

    python benchmarks/allocator.py [--rounds 3] [--images 1000] [--iw-samples 100]

A conv VAE (`shapes64` on a folder of PNGs that scripts/make_shapes.py writes) is trained
for two epochs, then its log p(x) is estimated with K importance samples on 100 test
images, each in a fresh process, with glibc's malloc settings as they come and after
`tune_malloc()`, alternating in rounds. Reported per side: training images/s (the second
epoch's), the estimate's wall time, and each process's user and system CPU time, minor
page faults and peak memory. The MLP preset is not affected (its tensors are small).

Writes benchmarks/results/allocator.json and allocator.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, median, write_results  # noqa: E402

DRIVER = """
import json, resource, sys, time
import vaekit
from vaekit.allocator import tune_malloc
from vaekit.data import load_data
from vaekit.evaluation.likelihood import importance_sampling

work, tuned, k = sys.argv[1], sys.argv[2] == "tuned", int(sys.argv[3])
applied = tune_malloc() if tuned else False
cfg = vaekit.load_config("shapes64", {
    "data.name": work + "/shapes", "train.epochs": 2, "train.progress": False,
    "train.out": work + "/run",
})
run = vaekit.train(cfg, overwrite=True)
records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
data = load_data(cfg.data, seed=cfg.train.seed, progress=False)
started = time.perf_counter()
estimate = importance_sampling(vaekit.load(run), data.x_test[:100], k)
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({
    "applied": applied,
    "train_images_per_s": records[-1]["samples_per_s"],
    "iw_seconds": time.perf_counter() - started,
    "log_px": float(estimate.log_px.mean()),
    "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
    "minor_faults": usage.ru_minflt, "peak_rss_mib": usage.ru_maxrss / 1024,
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--iw-samples", type=int, default=100)
    args = parser.parse_args()
    info = machine()
    work = Path(tempfile.mkdtemp(prefix="vaekit-allocator-"))
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "make_shapes.py"),
            str(work / "shapes"),
            "--n",
            str(args.images),
        ],
        check=True,
        capture_output=True,
    )
    sides = ["glibc defaults", "tune_malloc()"]
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for r in range(args.rounds):
        for side in sides if r % 2 == 0 else sides[::-1]:
            mode = "tuned" if side == "tune_malloc()" else "plain"
            out = subprocess.run(
                [sys.executable, "-c", DRIVER, str(work), mode, str(args.iw_samples)],
                check=True,
                capture_output=True,
                text=True,
            )
            runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
            got = runs[side][-1]
            print(
                f"round {r + 1}: {side}: {got['train_images_per_s']:.0f} images/s, "
                f"log p(x) in {got['iw_seconds']:.1f} s, sys {got['sys_s']:.1f} s",
                flush=True,
            )
    assert all(run["applied"] for run in runs["tune_malloc()"])

    def mid(side: str, key: str) -> float:
        return median([run[key] for run in runs[side]])

    result = {
        "machine": info,
        "rounds": args.rounds,
        "images": args.images,
        "iw_samples": args.iw_samples,
        "runs": runs,
        "median": {
            side: {key: round(mid(side, key), 2) for key in runs[side][0] if key != "applied"}
            for side in sides
        },
    }
    table = [
        [
            "shapes64 (conv), per process",
            "train images/s",
            f"log p(x), K={args.iw_samples}, 100 images (s)",
            "user CPU (s)",
            "system CPU (s)",
            "minor page faults",
            "peak RSS (MiB)",
        ]
    ]
    for side in sides:
        table.append(
            [
                side,
                f"{mid(side, 'train_images_per_s'):,.0f}",
                f"{mid(side, 'iw_seconds'):.1f}",
                f"{mid(side, 'user_s'):.1f}",
                f"{mid(side, 'sys_s'):.1f}",
                f"{mid(side, 'minor_faults'):,.0f}",
                f"{mid(side, 'peak_rss_mib'):,.0f}",
            ]
        )
    pairs = zip(*runs.values(), strict=True)
    agree = max(abs(a["log_px"] - b["log_px"]) for a, b in pairs)
    notes = [
        f"Median over {args.rounds} rounds, the two sides alternating, each a fresh process: "
        f"train 2 epochs on {args.images} generated 64x64 images, then estimate log p(x). "
        f"The estimates agree to {agree:.1e} nats."
    ]
    md = write_results("allocator", result, table, notes)
    print(md.read_text())


if __name__ == "__main__":
    main()
