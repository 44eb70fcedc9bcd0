"""What keeping a trial's validation probabilities (for ensembles) costs a trial's fit.

    python bench/bench_val_probs.py --data-dir ../shared/data/cats_and_dogs_small \\
        [--image-size 32] [--epochs 6] [--reps 5] [--out bench/results/val-probs-cpu]

Trains one configuration (``hpo.training.train``, the search's training path, 3 conv
blocks, batch 32, augmentation on) on cats_and_dogs_small's train split with its
validation split, three ways, after one untimed warm-up fit, rotating within each
repetition so that all meet the same machine load:

* **none**: no probabilities kept;
* **second pass**: after each epoch that raises the best validation accuracy, predict the
  validation split again (how hpo kept them before ``hpo.validation_pass``);
* **fit's own pass**: :class:`hpo.validation_pass.ScoringEpochProbabilities`, a compiled
  metric that copies the validation pass's outputs, read after such epochs.

The table shows the median fit seconds and each way's excess over ``none``, with the
probabilities' largest difference between the two ways (same seed, same weights).
Writes ``val-probs.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing hpo

PARAMS = {
    "learning_rate": 1e-3,
    "batch_size": 32,
    "l2": 1e-5,
    "dropout": 0.2,
    "conv_blocks": 3,
    "activation": "relu",
    "filters": 16,
    "optimizer": "adam",
}
CASES = ("none", "second pass", "fit's own pass")


def second_pass(images: Any) -> Any:
    """The earlier way: a callback that predicts the split again after improving epochs."""
    import keras

    from hpo.head import predict_proba
    from hpo.score import MONITOR

    class SecondPass(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.best, self.probs = None, None

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            value = (logs or {}).get(MONITOR)
            if value is not None and (self.best is None or value > self.best):
                self.best = value
                self.probs = predict_proba(self.model, images).astype("float16")

    return SecondPass()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", default="bench/results/val-probs-cpu")
    args = parser.parse_args()

    import numpy as np

    from hpo.data import load_dataset
    from hpo.device import load_backend
    from hpo.predictions import validation_rows
    from hpo.training import train
    from hpo.validation_pass import ScoringEpochProbabilities

    backend = load_backend()
    data = load_dataset("catsdogs", args.data_dir, args.image_size)
    train_split, val_split = data.split("train"), data.split("val")
    val_images = val_split.images[validation_rows(val_split)]
    # untimed: the process's one-time costs (backend start, first traces) fall on no case
    train(PARAMS, train_split, num_classes=len(data.classes), epochs=1, val_split=val_split)
    seconds: dict[str, list[float]] = {case: [] for case in CASES}
    differences = []
    for rep in range(args.reps):
        probs = {}
        for case in CASES[rep % len(CASES) :] + CASES[: rep % len(CASES)]:
            callbacks, scoring = [], None
            if case == "second pass":
                callbacks = [second_pass(val_images)]
            elif case == "fit's own pass":
                scoring = ScoringEpochProbabilities()
            started = time.perf_counter()
            train(
                PARAMS,
                train_split,
                num_classes=len(data.classes),
                epochs=args.epochs,
                val_split=val_split,
                seed=rep,
                callbacks=callbacks,
                scoring_probabilities=scoring,
            )
            seconds[case].append(time.perf_counter() - started)
            kept = scoring or (callbacks[0] if callbacks else None)
            if kept is not None:
                probs[case] = np.asarray(kept.probs, dtype="float32")
            print(f"rep {rep} {case:<15} {seconds[case][-1]:.2f}s", file=sys.stderr)
        theirs, ours = probs["second pass"], probs["fit's own pass"]
        differences.append(float(np.abs(theirs[:, -1] - ours[:, -1]).max()))

    med = {case: statistics.median(values) for case, values in seconds.items()}
    table = {
        case: {
            "median_s": round(med[case], 2),
            "excess_over_none_s": round(med[case] - med["none"], 2),
            "excess_pct": round(100 * (med[case] / med["none"] - 1), 1),
            "runs_s": [round(v, 2) for v in values],
        }
        for case, values in seconds.items()
    }
    print(
        f"{args.epochs}-epoch fits at {args.image_size}px on {len(train_split)} images, "
        f"{len(val_split)} validation, median of {args.reps}"
    )
    print(f"{'case':<16}{'fit s':>8}{'excess s':>10}{'excess %':>10}")
    for case, row in table.items():
        print(
            f"{case:<16}{row['median_s']:>8.2f}{row['excess_over_none_s']:>10.2f}"
            f"{row['excess_pct']:>10.1f}"
        )
    print(f"largest probability difference between the two ways: {max(differences):.2g}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "val-probs.json").write_text(
        json.dumps(
            {
                "command": " ".join(["python", *sys.argv]),
                "machine": f"{platform.machine()}, {platform.node()}",
                "backend": backend,
                "keras": metadata.version("keras"),
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "settings": vars(args),
                "params": PARAMS,
                "table": table,
                "largest_probability_difference": max(differences),
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {out / 'val-probs.json'}")


if __name__ == "__main__":
    main()
