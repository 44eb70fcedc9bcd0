"""Training speed and memory: batches read from the memory-mapped cache (hpo) vs a copy in RAM.

    python bench/bench_training.py            # ~2 min on 2 cores: speed at 64 px, memory at 128 px
    python bench/bench_training.py --sizes 64 128    # speed at 128 px too (~+5 min)
        [--reps 8] [--data-dir ../shared/data/cats_and_dogs_small] [--cache-dir DIR]
        [--batch-size 32] [--memory-size 128]

Two ways to train the same model (``hpo.model.build_model``, 3 conv blocks of 16/32/64
filters, augmentation on, compiled like ``hpo.training.train`` compiles it) on the train split
of ``cats_and_dogs_small`` (~2,000 images):

* **hpo**: ``hpo.training.train`` on ``Dataset.split("train")``; ``Batches`` (a Keras
  ``PyDataset``) reads the sorted rows of each batch from the memory-mapped uint8 cache.
* **plain**: the notebook way, ``x = np.asarray(images[rows])`` (a uint8 copy in RAM), then
  ``model.fit(x, y, batch_size=..., shuffle=True)``.

Speed: images/second of a training epoch after a warm-up epoch (graph tracing excluded), no
validation, and the same from the median step of each epoch (less sensitive to other
processes' bursts). All epochs run in one fresh process per image size, rotating which path
goes first, so all see the same machine load; the table shows medians and, per path, the
median and range over repetitions of its speed relative to plain's in the same repetition.
A third path, "Batches over RAM copy" (hpo's model and ``Batches``, but over the in-RAM copy
instead of the memmap), splits any gap into what the memmap costs (hpo vs this row) and what
feeding Keras from a Python ``PyDataset`` costs (this row vs plain; on TensorFlow it goes
through ``tf.data.Dataset.from_generator``, one Python call per batch). The time
``Batches.__getitem__`` alone needs for an epoch's batches is printed too.

Memory: each case (hpo / plain at ``--memory-size``) runs in its own fresh process: import
Keras and hpo, reset the peak-RSS counter, load the dataset (cache hit) and train one epoch.
"peak RSS" is VmHWM growth over that; a 10 ms sampler splits it into anonymous (private to the
process) and file-backed pages. Memmap pages the hpo path touches are file-backed page-cache
pages: every worker on the host that maps the same ``images.npy`` shares one copy of them,
and the kernel may drop them under pressure (they are re-read from disk). The plain path's
copy is anonymous: each worker pays it again, and it can only be swapped.

Physical ceiling: training speed is bound by the CPU's FLOP rate (the model step is ~all of an
epoch), so 1.0 is the best any path can do against plain. Reading a batch from the page cache
is a memory copy (0.4 MB per 32 images at 64 px, 1.5 MB at 128 px) plus a uint8->float32
conversion: ~0.1 ms at 64 px and ~0.3 ms at 128 px here, against a model step of ~35 ms and
~150 ms; memory bandwidth (GB/s) is far above the ~25-60 MB/s of pixels training consumes.
What a Python-fed pipeline does pay is Keras' per-batch Python call (the ``PyDataset``
adapter, under the GIL, competing with TensorFlow's threads for the 2 cores), a fixed
~1-3 ms per step on this machine whatever the batches are read from. Memory: the plain path
needs at least one private copy of the train split per process (N x S x S x 3 bytes); the
hpo path needs none, only page cache shared by all workers (at most the size of
``images.npy``).

Decodes into ``--cache-dir`` (default: a temporary folder, ~20 s of decoding per image size).
Writes bench/results/training.json.
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
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing hpo

DATASET = "catsdogs"
PARAMS = dict(
    learning_rate=1e-3,
    l2=1e-5,
    dropout=0.2,
    conv_blocks=3,
    activation="relu",
    filters=16,
    optimizer="adam",
)
MB = 1024 * 1024


# ---------------------------------------------------------------------------- child processes


def _status() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile of this process, in bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024
    return out


class _Sampler(threading.Thread):
    """Peak anonymous and file-backed RSS, sampled every 10 ms."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = _status()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.01):
            now = _status()
            for key in ("RssAnon", "RssFile", "VmRSS"):
                self.peak[key] = max(self.peak[key], now[key])

    def stop(self) -> dict[str, int]:
        self._done.set()
        self.join()
        return self.peak


def _plain_model(images: Any, labels: Any, rows: Any, params: dict, seed: int) -> tuple:
    """The notebook path: copy the split into RAM; the same model, compiled the same way."""
    import numpy as np

    from hpo.training import compiled_model

    started = time.perf_counter()
    x = np.asarray(images[rows])
    y = np.asarray(labels[rows]).astype("float32")
    copy_s = time.perf_counter() - started
    import keras

    keras.utils.set_random_seed(seed)
    model, _ = compiled_model(params, 2, x.shape[1], augment=True)
    return model, x, y, {"copy_s": copy_s, "copy_bytes": int(x.nbytes)}


def _epoch_timer() -> Any:
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

            self.step_s: list[float] = []  # median step of each epoch

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._t = self._last = time.perf_counter()
            self._steps: list[float] = []

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            now = time.perf_counter()
            self._steps.append(now - self._last)  # data wait + model step
            self._last = now

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.seconds.append(time.perf_counter() - self._t)
            self.step_s.append(statistics.median(self._steps[1:]))

    return EpochTimer()


def child_speed(cfg: dict) -> dict:
    """Warm every path up (one epoch each: tracing), then time single epochs, rotating."""
    import numpy as np

    from hpo.data import Split, load_dataset
    from hpo.feed import Batches
    from hpo.training import train

    ds = load_dataset(DATASET, cfg["data_dir"], cfg["image_size"], 0)
    split = ds.split("train")
    params = {**PARAMS, "batch_size": cfg["batch_size"]}
    bs = cfg["batch_size"]

    # what the hpo path's data reading costs, alone: one epoch of __getitem__ calls
    batches = Batches(split, bs, binary=True, shuffle=True)
    read_s = []
    for _ in range(3):
        started = time.perf_counter()
        for i in range(len(batches)):
            batches[i]
        read_s.append(time.perf_counter() - started)
        batches.on_epoch_end()

    # hpo: train() itself for the warm-up epoch, then more epochs of the same model on the
    # same kind of Batches that train() feeds it
    warm = {"hpo": _epoch_timer(), "plain": _epoch_timer()}
    hpo_model = train(params, split, num_classes=2, epochs=1, seed=0, callbacks=[warm["hpo"]]).model
    plain_model, x, y, copy = _plain_model(ds.images, ds.labels, split.rows, params, 0)
    plain_model.fit(
        x, y, batch_size=bs, epochs=1, shuffle=True, verbose=0, callbacks=[warm["plain"]]
    )
    # the attribution path: hpo's model and Batches, but over the in-RAM copy (no memmap)
    in_ram = Batches(
        Split(x, np.asarray(ds.labels[split.rows]), np.arange(len(x))),
        bs,
        binary=True,
        shuffle=True,
    )
    hpo_model.fit(in_ram, epochs=1, verbose=0)
    fits = {
        "hpo": lambda cb: hpo_model.fit(batches, epochs=1, verbose=0, callbacks=[cb]),
        "Batches over RAM copy": lambda cb: hpo_model.fit(
            in_ram, epochs=1, verbose=0, callbacks=[cb]
        ),
        "plain": lambda cb: plain_model.fit(
            x, y, batch_size=bs, epochs=1, shuffle=True, verbose=0, callbacks=[cb]
        ),
    }
    paths = list(fits)
    runs: list[dict] = []
    for rep in range(cfg["reps"]):
        for path in paths[rep % 3 :] + paths[: rep % 3]:  # rotate which path goes first
            timer = _epoch_timer()
            fits[path](timer)
            runs.append(
                {"rep": rep, "path": path, "epoch_s": timer.seconds[0], "step_s": timer.step_s[0]}
            )
    return {
        "images": len(split),
        "batches": len(batches),
        "read_s": float(np.median(read_s)),
        "warmup_s": {p: t.seconds[0] for p, t in warm.items()},
        **copy,
        "runs": runs,
        "versions": _versions(),
    }


def _versions() -> dict:
    import keras
    import numpy as np

    try:
        import tensorflow as tf

        tf_version = tf.__version__
    except ImportError:
        tf_version = None
    return {
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "tensorflow": tf_version,
        "numpy": np.__version__,
    }


def child_memory(cfg: dict) -> dict:
    import keras  # noqa: F401  (imported before the baseline, as in a worker)

    from hpo.data import load_dataset
    from hpo.training import train

    try:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    base = _status()
    sampler = _Sampler()
    sampler.start()
    ds = load_dataset(DATASET, cfg["data_dir"], cfg["image_size"], 0)
    split = ds.split("train")
    params = {**PARAMS, "batch_size": cfg["batch_size"]}
    extra: dict = {}
    if cfg["path"] == "hpo":
        loaded = _status()
        train(params, split, num_classes=2, epochs=1)
    else:
        model, x, y, extra = _plain_model(ds.images, ds.labels, split.rows, params, 0)
        loaded = _status()
        model.fit(x, y, batch_size=cfg["batch_size"], epochs=1, shuffle=True, verbose=0)
    peak = sampler.stop()
    end = _status()
    return {
        "path": cfg["path"],
        "image_size": cfg["image_size"],
        "hwm_reset": reset,
        "images": len(split),
        "cache_bytes": (ds.cache_path / "images.npy").stat().st_size,
        "split_bytes": int(len(split) * ds.images[0].nbytes),
        "loaded_anon": loaded["RssAnon"] - base["RssAnon"],
        "peak_rss": end["VmHWM"] - base["VmRSS"],
        "peak_anon": peak["RssAnon"] - base["RssAnon"],
        "peak_file": peak["RssFile"] - base["RssFile"],
        **extra,
    }


def _run_child(kind: str, cfg: dict, cache_dir: Path) -> dict:
    env = {**os.environ, "HPO_CACHE_DIR": str(cache_dir), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, json.dumps(cfg)],
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{kind} child failed ({proc.returncode}): {cfg}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- the parent

PATHS = ("hpo", "Batches over RAM copy", "plain")


def _speed_rows(result: dict, size: int, batch_size: int) -> dict:
    """Median images/s per path, from whole epochs and from the median step of each epoch,
    and the median over repetitions of each path's speed relative to plain's."""
    n, runs = result["images"], result["runs"]
    by_rep: dict[int, dict[str, dict]] = {}
    for r in runs:
        by_rep.setdefault(r["rep"], {})[r["path"]] = r
    paths = {}
    for path in PATHS:
        row = {}
        for key, images in (("epoch_s", n), ("step_s", batch_size)):
            name = key[:-2]
            ratios = [rep["plain"][key] / rep[path][key] for rep in by_rep.values()]
            row[name] = {
                "images_per_s": statistics.median(
                    images / r[key] for r in runs if r["path"] == path
                ),
                "vs_plain": statistics.median(ratios),
                "ratios": ratios,
            }
        paths[path] = row
    epoch_s = statistics.median(r["epoch_s"] for r in runs if r["path"] == "hpo")
    return {
        "image_size": size,
        "images": n,
        "batches": result["batches"],
        "paths": paths,
        "hpo_epoch_s": epoch_s,
        "batch_read_s": result["read_s"],
        "batch_read_share": result["read_s"] / epoch_s,
        "warmup_s": result["warmup_s"],
        "plain_copy_s": result["copy_s"],
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "cats_and_dogs_small"
    )
    parser.add_argument("--cache-dir", type=Path, help="decode cache (default: a temp folder)")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[64], help="image sizes for the speed comparison"
    )
    parser.add_argument(
        "--memory-size",
        type=int,
        default=128,
        help="image size for the memory comparison (0: skip it)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--reps",
        type=int,
        default=8,
        help="timed epochs of each path, alternating, after a warm-up epoch",
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        kind, cfg = args.child[0], json.loads(args.child[1])
        print(json.dumps({"speed": child_speed, "memory": child_memory}[kind](cfg)))
        return

    from rich.console import Console
    from rich.table import Table

    from hpo.data import load_dataset

    started = time.perf_counter()
    console = Console(width=140)
    with tempfile.TemporaryDirectory(prefix="hpo-bench-training-") as tmp:
        cache_dir = args.cache_dir or Path(tmp)
        sizes = sorted({*args.sizes, *([args.memory_size] if args.memory_size else [])})
        cache = {}
        for size in sizes:  # decode outside every measurement
            ds = load_dataset(DATASET, args.data_dir, size, 0, cache_dir=cache_dir)
            cache[size] = {
                "images": len(ds.images),
                "train": len(ds.splits["train"]),
                "bytes": (ds.cache_path / "images.npy").stat().st_size,
            }
        common = {"data_dir": str(args.data_dir), "batch_size": args.batch_size}

        speed, versions = [], {}
        for size in args.sizes:
            console.print(
                f"speed at {size} px: a warm-up epoch per path, then {args.reps} "
                f"timed epochs of each of {', '.join(PATHS)}, rotating ..."
            )
            result = _run_child(
                "speed", {**common, "image_size": size, "reps": args.reps}, cache_dir
            )
            speed.append(_speed_rows(result, size, args.batch_size))
            versions = result["versions"]

        memory = []
        if args.memory_size:
            for path in ("hpo", "plain"):
                console.print(f"memory at {args.memory_size} px: {path} (fresh process) ...")
                memory.append(
                    _run_child(
                        "memory",
                        {**common, "image_size": args.memory_size, "path": path},
                        cache_dir,
                    )
                )

    cores = os.cpu_count() or 1
    table = Table(
        title=f"training speed: {DATASET} train split, batch {args.batch_size}, "
        f"3 conv blocks x 16 filters, {cores} CPU cores; median of "
        f"{args.reps} epochs each",
        title_justify="left",
    )
    for column in (
        "px",
        "path",
        "img/s (epoch)",
        "vs plain",
        "min-max",
        "img/s (median step)",
        "vs plain ",
        "min-max ",
    ):
        table.add_column(column, justify="left" if column == "path" else "right")
    for row in speed:
        for path, m in row["paths"].items():
            table.add_row(
                str(row["image_size"]),
                path,
                *(
                    cell
                    for key in ("epoch", "step")
                    for cell in (
                        f"{m[key]['images_per_s']:.0f}",
                        f"{m[key]['vs_plain']:.3f}",
                        f"{min(m[key]['ratios']):.2f}-{max(m[key]['ratios']):.2f}",
                    )
                ),
            )
    console.print(table)

    if memory:
        table = Table(
            title=f"memory: load + 1 epoch at {args.memory_size} px, fresh process "
            "per case, growth over the imports (MiB)",
            title_justify="left",
        )
        for column in (
            "path",
            "anon after load (+copy)",
            "peak anon (private)",
            "peak file-backed (shared)",
            "peak RSS (VmHWM)",
        ):
            table.add_column(column, justify="right")
        for row in memory:
            table.add_row(
                row["path"],
                f"{row['loaded_anon'] / MB:.0f}",
                f"{row['peak_anon'] / MB:.0f}",
                f"{row['peak_file'] / MB:.0f}",
                f"{row['peak_rss'] / MB:.0f}",
            )
        console.print(table)
        hpo_row, plain_row = memory
        console.print(
            f"decoded cache at {args.memory_size} px: images.npy {hpo_row['cache_bytes'] / MB:.0f} "
            f"MiB (all splits), train split {hpo_row['split_bytes'] / MB:.0f} MiB. Page cache "
            f"holds one copy for every worker on the host; each plain-path worker adds "
            f"{(plain_row['peak_anon'] - hpo_row['peak_anon']) / MB:.0f} MiB of private memory."
        )
    for row in speed:
        hpo = row["paths"]["hpo"]
        console.print(
            f"{row['image_size']} px: hpo / plain = {hpo['epoch']['vs_plain']:.3f} per epoch, "
            f"{hpo['step']['vs_plain']:.3f} per median step (1.0 is the ceiling). Reading an "
            f"epoch's batches from the memmap takes {row['batch_read_s']:.3f} s "
            f"({row['batch_read_share']:.1%} of an hpo epoch); the plain path's copy took "
            f"{row['plain_copy_s']:.2f} s once."
        )
    result = {
        "args": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "child"
        },
        "params": PARAMS,
        "cpu_count": cores,
        "python": platform.python_version(),
        "machine": platform.machine(),
        **versions,
        "cache": cache,
        "speed": speed,
        "memory": memory,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    out = REPO / "bench" / "results" / "training.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    console.print(f"wrote {out.relative_to(REPO)} ({result['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
