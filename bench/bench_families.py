"""Model families at fixed settings: what the exported model scores, and what an epoch costs.

    python bench/bench_families.py      # ~35-45 min on 2 shared cores at the defaults
        [--data-dir ../shared/data/cats_and_dogs_small] [--image-size 64] [--epochs 20]
        [--seeds 0 1 2] [--families plain residual separable] [--out bench/results/families.json]
        [--jobs 3] [--threads 0]    # one process per seed (see below)

Each family (``block = plain | residual | separable``) is trained with the same fixed,
sensible settings (``PARAMS`` below: 4 blocks of 16/32/64/128 filters, Adam 1e-3 with the
cosine schedule, label smoothing 0.1, augmentation on) by the export's own code path,
:func:`hpo.export.retrain_and_test`: trained on train+val with :func:`hpo.training.train`,
augmentation layers dropped, tested once on the provided test split (1,000 images). It reports
the plain test accuracy (the headline an export writes) and, apart, the flip-averaged one
(``--tta``). Seconds per epoch are the median epoch after the first (which includes graph
tracing), measured in the same process as the accuracy. Families rotate their order from seed
to seed, so a burst of load from other processes does not always land on the same family;
the timing spread over seeds is reported so the noise can be judged.

``--jobs N`` runs the seeds in N processes at once (``--threads T`` limits each to T
TensorFlow threads; 0 leaves TensorFlow's default). On a machine shared with other jobs the
three seeds then see the same load, and the bench ends sooner. All families of one seed run
in the same process, one after the other, so their seconds per epoch stay comparable within
a seed; across seeds they are not (each process got what the machine had left).

Results are appended to the JSON after every run (an interrupted bench keeps what it measured).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing hpo

DATASET = "catsdogs"
PARAMS: dict[str, Any] = dict(
    learning_rate=1e-3,
    batch_size=32,
    l2=1e-5,
    dropout=0.3,
    conv_blocks=4,
    filters=16,
    growth=2.0,
    activation="relu",
    optimizer="adam",
    dense_units=0,
    label_smoothing=0.1,
    weight_decay=0.004,
    lr_schedule="cosine",
)
FAMILIES = ("plain", "residual", "separable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", type=Path, default=REPO.parent / "shared/data/cats_and_dogs_small"
    )
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/families.json")
    parser.add_argument("--jobs", type=int, default=1, help="processes, one seed each")
    parser.add_argument(
        "--threads", type=int, default=0, help="TensorFlow threads per job (0: default)"
    )
    args = parser.parse_args()
    if args.jobs > 1:
        run_parallel(args)
        return

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from hpo.device import load_backend

    backend = load_backend()
    from hpo.data import load_dataset
    from hpo.export import retrain_and_test, versions

    data = load_dataset(DATASET, args.data_dir, args.image_size, 0, progress=True)
    record: dict[str, Any] = {
        "bench": "families",
        "dataset": DATASET,
        "data_dir": str(args.data_dir),
        "image_size": args.image_size,
        "epochs": args.epochs,
        "seeds": args.seeds,
        "params": PARAMS,
        "augment": True,
        "backend": backend,
        "versions": versions(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "train_images": len(data.split("train", "val")),
        "test_images": len(data.split("test")),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "runs": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        turn = seed % len(args.families)
        order = args.families[turn:] + args.families[:turn]
        for family in order:
            params = {**PARAMS, "block": family}
            ends: list[float] = []
            started = time.perf_counter()
            done = retrain_and_test(
                params,
                data,
                epochs=args.epochs,
                seed=seed,
                augment=True,
                tta=True,
                on_epoch=lambda epoch, logs, ends=ends: ends.append(time.perf_counter()),
            )
            epoch_seconds = [b - a for a, b in itertools.pairwise([started, *ends])]
            run = {
                "family": family,
                "seed": seed,
                "test_accuracy": done.report["accuracy"],
                "test_macro_f1": done.report["macro_f1"],
                "tta_test_accuracy": done.tta_report["accuracy"],
                "train_accuracy_last_epoch": done.result.history["accuracy"][-1],
                "seconds_per_epoch": statistics.median(epoch_seconds[1:] or epoch_seconds),
                "first_epoch_seconds": epoch_seconds[0],
                "weights": int(done.model.count_params()),
            }
            record["runs"].append(run)
            print(
                f"{family:9s} seed {seed}: test {run['test_accuracy']:.3f} "
                f"(tta {run['tta_test_accuracy']:.3f}), {run['seconds_per_epoch']:.1f} s/epoch",
                flush=True,
            )
            record["summary"] = summarize(record["runs"])
            args.out.write_text(json.dumps(record, indent=2) + "\n")
    print_table(record)


def run_parallel(args: argparse.Namespace) -> None:
    """Each seed in its own one-thread process (``--jobs`` at a time); merge their JSONs."""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    threads = {
        "TF_NUM_INTRAOP_THREADS": str(args.threads),
        "TF_NUM_INTEROP_THREADS": str(args.threads),
    }
    env = {**os.environ, **(threads if args.threads else {})}
    parts = {seed: args.out.with_suffix(f".seed{seed}.json") for seed in args.seeds}
    pending, running = list(args.seeds), []
    while pending or running:
        while pending and len(running) < args.jobs:
            seed = pending.pop(0)
            command = [
                sys.executable,
                __file__,
                "--data-dir",
                str(args.data_dir),
                "--image-size",
                str(args.image_size),
                "--epochs",
                str(args.epochs),
                "--seeds",
                str(seed),
                "--families",
                *args.families,
                "--out",
                str(parts[seed]),
            ]
            running.append(subprocess.Popen(command, env=env))
        time.sleep(5)
        running = [p for p in running if p.poll() is None]
    records = [json.loads(path.read_text()) for path in parts.values() if path.is_file()]
    record = {
        **records[0],
        "seeds": args.seeds,
        "jobs": args.jobs,
        "threads_per_job": args.threads or "default",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "runs": [run for r in records for run in r["runs"]],
    }
    record["summary"] = summarize(record["runs"])
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print_table(record)


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean, standard deviation and range per family of each measured number."""
    out: dict[str, dict[str, Any]] = {}
    for family in dict.fromkeys(r["family"] for r in runs):
        mine = [r for r in runs if r["family"] == family]
        row: dict[str, Any] = {"runs": len(mine), "weights": mine[0]["weights"]}
        for key in ("test_accuracy", "tta_test_accuracy", "seconds_per_epoch"):
            values = [r[key] for r in mine]
            row[key] = {
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "min": min(values),
                "max": max(values),
            }
        out[family] = row
    return out


def print_table(record: dict[str, Any]) -> None:
    print(
        f"\n{record['dataset']} at {record['image_size']} px, {record['epochs']} epochs on train+val "
        f"({record['train_images']} images), test {record['test_images']} images, seeds {record['seeds']}"
    )
    print(
        "| family | weights | test acc mean ± sd [min, max] | TTA test acc mean | s/epoch median-of-run mean [min, max] |"
    )
    print("|---|---|---|---|---|")
    for family, row in record["summary"].items():
        acc, tta, sec = row["test_accuracy"], row["tta_test_accuracy"], row["seconds_per_epoch"]
        print(
            f"| {family} | {row['weights']:,} | {acc['mean']:.3f} ± {acc['std']:.3f} "
            f"[{acc['min']:.3f}, {acc['max']:.3f}] | {tta['mean']:.3f} | "
            f"{sec['mean']:.1f} [{sec['min']:.1f}, {sec['max']:.1f}] |"
        )


if __name__ == "__main__":
    main()
