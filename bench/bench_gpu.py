"""Images per second of an hpo trial against the model's own ceiling, on this backend.

    KERAS_BACKEND=jax python bench/bench_gpu.py            # 64 and 128 px, float32 and bf16
    KERAS_BACKEND=torch python bench/bench_gpu.py --out bench/results/gpu-torch.json
    KERAS_BACKEND=jax python bench/bench_gpu.py --sizes 16 --images 512 --epochs 3 \\
        --precisions float32 --batch 64 --blocks 3      # tiny: proves it runs (CPU)

For each image size and precision, on synthetic uint8 images (10 classes, generated here):

* **trial**: ``hpo.training.train`` exactly as a study trial calls it (the feed and steps per
  execution that ``hpo.execution.plan_execution`` picks here, or ``--feed``), with a 15%
  validation split evaluated every epoch; images/s = train images / epoch seconds, median
  over the epochs after the first (which compiles). ``trial, no val``: the same without the
  validation pass, to see the feed's cost alone.
* **ceiling**: the same model, compiled the same way, stepping on one batch that already
  sits on the device: on JAX the compiled train step itself in a loop (state threaded
  through, one sync at the end); on other backends ``train_on_batch`` (which syncs each
  step, so it understates their ceiling).

The goal of issue 9 is a trial at >= 80% of the ceiling on a GPU. Numbers on a CPU only
prove the script works. Prints a table, writes JSON (``--out``, default
``bench/results/gpu-<backend>.json``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PARAMS = dict(
    learning_rate=1e-3, l2=1e-5, dropout=0.2, activation="relu", filters=32, optimizer="adam"
)


def synthetic(n: int, size: int, seed: int = 0) -> tuple[Any, Any]:
    """uint8 images whose class sets a tint, with noise: learnable, cheap to make."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    tints = rng.integers(40, 215, (10, 3))
    images = np.empty((n, size, size, 3), np.uint8)
    for start in range(0, n, 512):
        chunk = slice(start, min(n, start + 512))
        noise = rng.normal(0, 40, (chunk.stop - chunk.start, size, size, 3))
        images[chunk] = np.clip(tints[labels[chunk]][:, None, None, :] + noise, 0, 255)
    return images, labels


class EpochTimes:
    """Seconds of each epoch (training plus the validation pass, as a trial runs it)."""

    def __init__(self) -> None:
        import keras

        class Callback(keras.callbacks.Callback):
            def on_epoch_begin(cb, epoch: int, logs: Any = None) -> None:
                cb.started = time.perf_counter()

            def on_epoch_end(cb, epoch: int, logs: Any = None) -> None:
                self.seconds.append(time.perf_counter() - cb.started)

        self.seconds: list[float] = []
        self.callback = Callback()

    def steady(self) -> float:
        """Median seconds of the epochs after the first (which traces and compiles)."""
        return statistics.median(self.seconds[1:] or self.seconds)


def trial_speed(
    params: dict, train_split: Any, val_split: Any, epochs: int, execution: Any
) -> tuple[float, float]:
    """Images/s of the steady epochs, and the first epoch's extra seconds over a steady one
    (tracing and compiling: on JAX, XLA also autotunes each convolution there)."""
    from hpo.training import train

    times = EpochTimes()
    train(
        params,
        train_split,
        num_classes=10,
        epochs=epochs,
        val_split=val_split,
        augment=True,
        seed=0,
        callbacks=[times.callback],
        execution=execution,
    )
    steady = times.steady()
    return len(train_split) / steady, times.seconds[0] - steady


def ceiling_speed(
    params: dict,
    images: Any,
    labels: Any,
    batch: int,
    precision: str,
    steps: int,
    augment: bool = True,
) -> tuple[float, str]:
    """The model's own speed: its compiled train step on a batch already on the device."""
    import keras
    import numpy as np

    from hpo.training import compiled_model, fresh_session

    fresh_session(0)
    model, _ = compiled_model(params, 10, images.shape[1], augment=augment, precision=precision)
    x = keras.ops.convert_to_tensor(images[:batch])
    y = keras.ops.convert_to_tensor(labels[:batch].astype("int32"))
    for _ in range(3):
        model.train_on_batch(x, y)  # builds the optimizer, compiles the step
    if keras.backend.backend() == "jax":
        model.make_train_function()
        state = model._get_jax_state(
            trainable_variables=True,
            non_trainable_variables=True,
            optimizer_variables=True,
            metrics_variables=True,
        )
        feed = itertools.repeat((x, y))
        logs, state = model.train_function(state, feed)
        float(np.asarray(logs["loss"]))
        started = time.perf_counter()
        for _ in range(steps):
            logs, state = model.train_function(state, feed)
        float(np.asarray(logs["loss"]))  # waits for every queued step
        method = "jax: compiled train step in a loop, one sync"
    else:
        started = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        method = f"{keras.backend.backend()}: train_on_batch (syncs every step)"
    return batch * steps / (time.perf_counter() - started), method


def write_result(
    out: Path, backend_line: str, device: str, args: argparse.Namespace, **fields: Any
) -> None:
    """Write a GPU benchmark's JSON: where it ran, how it was called, then ``fields``."""
    result = {
        "backend": backend_line,
        "device": device,
        "measured_on_gpu": device != "CPU",
        "python": platform.python_version(),
        "args": {k: str(v) for k, v in vars(args).items()},
        **fields,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"])
    parser.add_argument("--images", type=int, default=8192, help="train+val images per size")
    parser.add_argument("--epochs", type=int, default=4, help="per trial (the first compiles)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50, help="ceiling: timed steps")
    parser.add_argument("--feed", choices=["auto", "device", "host"], default="auto")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import numpy as np

    from hpo.data import Split
    from hpo.device import accelerators, load_backend
    from hpo.execution import feed_bytes, plan_execution

    backend_line = load_backend()
    import keras

    device = ", ".join(accelerators()) or "CPU"
    print(f"backend: {backend_line}", file=sys.stderr)
    params = {**PARAMS, "batch_size": args.batch, "conv_blocks": args.blocks}
    rows = []
    for size, precision in itertools.product(args.sizes, args.precisions):
        images, labels = synthetic(args.images, size)
        n_val = int(0.15 * len(images))
        train_split = Split(images, labels, np.arange(n_val, len(images)))
        val_split = Split(images, labels, np.arange(n_val))
        execution = plan_execution(
            {"precision": precision, "feed": args.feed}, feed_bytes(train_split, val_split)
        )
        with_val, compile_s = trial_speed(params, train_split, val_split, args.epochs, execution)
        no_val, _ = trial_speed(params, train_split, None, args.epochs, execution)
        ceiling, method = ceiling_speed(params, images, labels, args.batch, precision, args.steps)
        rows.append(
            {
                "size": size,
                "precision": precision,
                "feed": execution.feed,
                "steps_per_execution": execution.steps_per_execution,
                "trial_images_per_s": round(with_val, 1),
                "trial_no_val_images_per_s": round(no_val, 1),
                "ceiling_images_per_s": round(ceiling, 1),
                "trial_vs_ceiling": round(no_val / ceiling, 3),
                "first_epoch_extra_s": round(compile_s, 2),
                "ceiling_method": method,
            }
        )
        print(
            f"{size}px {precision}: trial {with_val:.0f}/s, no val {no_val:.0f}/s, "
            f"ceiling {ceiling:.0f}/s; first epoch +{compile_s:.1f}s",
            file=sys.stderr,
        )

    print(
        f"\nbackend {keras.backend.backend()} on {device}; {args.images} images "
        f"(85% train), batch {args.batch}, {args.blocks} conv blocks, {args.epochs} epochs"
    )
    header = (
        "size",
        "precision",
        "feed",
        "trial img/s",
        "trial no-val img/s",
        "ceiling img/s",
        "no-val/ceiling",
        "first epoch extra s",
    )
    print(" | ".join(header))
    for r in rows:
        print(
            " | ".join(
                [
                    f"{r['size']}px",
                    r["precision"],
                    r["feed"],
                    f"{r['trial_images_per_s']:.0f}",
                    f"{r['trial_no_val_images_per_s']:.0f}",
                    f"{r['ceiling_images_per_s']:.0f}",
                    f"{r['trial_vs_ceiling']:.0%}",
                    f"{r['first_epoch_extra_s']:.1f}",
                ]
            )
        )
    out = args.out or REPO / "bench" / "results" / f"gpu-{keras.backend.backend()}.json"
    write_result(out, backend_line, device, args, params=params, rows=rows)


if __name__ == "__main__":
    main()
