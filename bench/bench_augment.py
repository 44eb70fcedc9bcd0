"""What training-time augmentation costs a compiled train step, on this backend and device.

    KERAS_BACKEND=jax python bench/bench_augment.py          # on a GPU
    python bench/bench_augment.py --size 16 --images 256 --steps 3    # proves it runs (CPU)

For each augmentation (``none``; ``keras``: the RandomFlip + RandomRotation + RandomZoom
layers hpo used before; ``hpo``: :class:`hpo.augment.RandomFlipZoomShift`), the ceiling of
bench/bench_gpu.py (the model's compiled step on a batch already on the device) with that
augmentation inside the model, and the augmentation alone called eagerly on the batch.
Prints a table, writes JSON (``--out``, default ``bench/results/augment-<backend>.json``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

VARIANTS = ("none", "keras", "hpo")


def keras_layers(**_: Any) -> Any:
    """The augmentation hpo's model had until the GPU measurement (hpo 0.1.0 before 2026-11-22)."""
    import keras

    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal"),
            keras.layers.RandomRotation(0.05, fill_mode="nearest"),
            keras.layers.RandomZoom(0.1, fill_mode="nearest"),
        ],
        name="augment",
    )


def eager_ms(layer: Any, batch: Any, repeats: int = 10) -> float:
    """Milliseconds per call of ``layer`` in training mode, synced at the end."""
    import keras

    def sync(t: Any) -> float:
        return float(keras.ops.convert_to_numpy(keras.ops.sum(t)))

    for _ in range(2):
        sync(layer(batch, training=True))
    started = time.perf_counter()
    for _ in range(repeats):
        out = layer(batch, training=True)
    sync(out)
    return (time.perf_counter() - started) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per ceiling")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from bench_gpu import PARAMS, ceiling_speed, synthetic, write_result

    import hpo.model
    from hpo.augment import RandomFlipZoomShift
    from hpo.device import accelerators, load_backend

    backend_line = load_backend()
    import keras

    images, labels = synthetic(args.images, args.size)
    batch = keras.ops.cast(keras.ops.convert_to_tensor(images[: args.batch]), "float32")
    params = {**PARAMS, "batch_size": args.batch, "conv_blocks": 4}
    rows = []
    for variant in VARIANTS:
        # The model builds its augmentation from this name; swap it for the variant.
        hpo.model.RandomFlipZoomShift = keras_layers if variant == "keras" else RandomFlipZoomShift
        layer = None if variant == "none" else hpo.model.RandomFlipZoomShift()
        ms = eager_ms(layer, batch) if layer is not None else 0.0
        ceiling, method = ceiling_speed(
            params,
            images,
            labels,
            args.batch,
            args.precision,
            args.steps,
            augment=layer is not None,
        )
        rows.append(
            {"augment": variant, "eager_ms_per_batch": round(ms, 2), "ceiling": round(ceiling)}
        )
        print(f"{variant}: {ms:.1f} ms eager, ceiling {ceiling:.0f} img/s", file=sys.stderr)
    hpo.model.RandomFlipZoomShift = RandomFlipZoomShift

    device = ", ".join(accelerators()) or "CPU"
    print(
        f"\n{backend_line}\n{args.size}px, batch {args.batch}, {args.precision}, 4 conv blocks "
        f"({method})"
    )
    print("augment | alone, eager (ms/batch) | compiled step with it (img/s) | vs none")
    for r in rows:
        print(
            f"{r['augment']} | {r['eager_ms_per_batch']:.1f} | {r['ceiling']} | "
            f"{r['ceiling'] / rows[0]['ceiling']:.0%}"
        )
    out = args.out or REPO / "bench" / "results" / f"augment-{keras.backend.backend()}.json"
    write_result(out, backend_line, device, args, rows=rows)


if __name__ == "__main__":
    main()
