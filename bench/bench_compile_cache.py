"""What JAX's persistent compilation cache and full last batches save a trial's first epoch.

    KERAS_BACKEND=jax python bench/bench_compile_cache.py [--reps 3] [--images 630]
        [--image-size 32] [--batch-size 32] [--epochs 4] [--out DIR]

Each case trains the same configuration (``hpo.training.train``, 3 conv blocks of 16
filters, augmentation on, random images of 4 classes, 80% train / 20% validation) in a
fresh process, the way a study's trial processes start, and reads its compile seconds
(:class:`hpo.timing.EpochTimes`: the first epoch's excess over the median later epoch):

* **cold**: a new, empty cache folder (``hpo.compile_cache``, as the CLI sets it);
* **warm**: a second process on the folder the cold one filled;
* **off**: ``HPO_COMPILATION_CACHE=off``, full last batches (hpo's default on JAX);
* **off, partial last batch**: the cache off and the last batch of an epoch smaller, as
  before hpo topped it up (a second shape of the train step to compile).

The number of images is chosen so that neither split divides by the batch size. Cases
rotate within each repetition, so all meet the same machine load; the table shows medians.
Cold, warm and off must reach the same per-epoch losses and accuracies: the cache changes
how fast a step is ready, never what it computes. Writes ``compile-cache.json`` into
``--out`` (default bench/results/compile-cache-cpu).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing hpo

from hpo.compile_cache import SETTING_ENV, enable_compilation_cache  # noqa: E402

PARAMS = {
    "learning_rate": 3e-3,
    "l2": 1e-5,
    "dropout": 0.1,
    "conv_blocks": 3,
    "activation": "relu",
    "filters": 16,
    "optimizer": "adam",
}
CASES = ("cold", "warm", "off", "off, partial last batch")


def child(images: int, image_size: int, batch_size: int, epochs: int, full: bool) -> None:
    """Train once in this (fresh) process and print the epoch times and curves as JSON."""
    import numpy as np

    from hpo.data import Split
    from hpo.execution import Execution
    from hpo.timing import EpochTimes
    from hpo.training import train

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (images, image_size, image_size, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, images)
    cut = int(images * 0.8)
    times = EpochTimes()
    result = train(
        {**PARAMS, "batch_size": batch_size},
        Split(pixels, labels, np.arange(cut)),
        num_classes=4,
        epochs=epochs,
        val_split=Split(pixels, labels, np.arange(cut, images)),
        seed=1,
        times=times,
        execution=Execution("host", "float32", 1, "bench", full_batches=full),
    )
    compiling, training, validating = times.split()
    print(
        json.dumps(
            {
                "compile_s": compiling,
                "first_epoch_s": times.epoch[0],
                "epoch_s": times.epoch,
                "history": result.history,
            }
        )
    )


def run_case(case: str, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One fresh process of ``case`` with its cache folder; adds the folder's entries."""
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "PYTHONPATH": str(REPO),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    for key in ("JAX_COMPILATION_CACHE_DIR", "JAX_ENABLE_COMPILATION_CACHE"):
        env.pop(key, None)
    env[SETTING_ENV] = "off" if case.startswith("off") else str(folder)
    enable_compilation_cache(env)
    full = case != "off, partial last batch"
    command = [sys.executable, __file__, "--child", *_sizes(args), "--full", str(int(full))]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    entries = [] if case.startswith("off") else list(folder.glob("*-cache"))
    row.update(
        case=case,
        cache_entries=len(entries),
        cache_bytes=sum(e.stat().st_size for e in entries),
    )
    return row


def _sizes(args: argparse.Namespace) -> list[str]:
    return [
        *("--images", str(args.images), "--image-size", str(args.image_size)),
        *("--batch-size", str(args.batch_size), "--epochs", str(args.epochs)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--images", type=int, default=630)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/compile-cache-cpu")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--full", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.images, args.image_size, args.batch_size, args.epochs, bool(args.full))
        return
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hpo-bench-xla-") as tmp:
        for rep in range(args.reps):
            folder = Path(tmp) / f"xla-{rep}"  # cold must find it empty, warm filled
            order = [CASES[(rep + i) % len(CASES)] for i in range(len(CASES))]
            if order.index("warm") < order.index("cold"):  # warm needs cold's entries
                order.remove("warm")
                order.insert(order.index("cold") + 1, "warm")
            for case in order:
                row = run_case(case, folder, args)
                row["rep"] = rep
                runs.append(row)
                print(f"rep {rep} {case:<24} compile {row['compile_s']:.2f}s", file=sys.stderr)
    table = {}
    for case in CASES:
        mine = [r for r in runs if r["case"] == case]
        table[case] = {
            "compile_s": statistics.median(r["compile_s"] for r in mine),
            "compile_s_all": [round(r["compile_s"], 2) for r in mine],
            "first_epoch_s": statistics.median(r["first_epoch_s"] for r in mine),
            "later_epoch_s": statistics.median(e for r in mine for e in r["epoch_s"][1:]),
            "cache_entries": max(r["cache_entries"] for r in mine),
            "cache_bytes": max(r["cache_bytes"] for r in mine),
        }
    cached = [r["history"] for r in runs if not r["case"].startswith("off,")]
    identical = all(h == cached[0] for h in cached)
    print(f"{'case':<26}{'compile s':>10}{'1st epoch s':>12}{'later s':>9}{'entries':>8}")
    for case, row in table.items():
        print(
            f"{case:<26}{row['compile_s']:>10.2f}{row['first_epoch_s']:>12.2f}"
            f"{row['later_epoch_s']:>9.2f}{row['cache_entries']:>8}"
        )
    print(f"cold, warm and off reached identical curves in every repetition: {identical}")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "compile-cache.json"
    out.write_text(
        json.dumps(
            {
                "command": "KERAS_BACKEND=jax python bench/bench_compile_cache.py "
                + " ".join([*_sizes(args), "--reps", str(args.reps)]),
                "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "versions": {p: metadata.version(p) for p in ("jax", "keras")},
                "table": table,
                "identical_curves": identical,
                "runs": runs,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
