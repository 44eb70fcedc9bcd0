"""How trials run on this machine: which feed brings the batches, in which precision the
model computes, and how many steps run per call into the compiled step.

A small CNN's step on a modern GPU takes well under a millisecond; a Python batch feed
that converts uint8 to float32 on the host takes longer than that, so on a GPU the images
go to the device once per trial and the model computes in bfloat16 where the GPU has it;
a trial whose activations cannot fit fails before it compiles. On CPU nothing changes: the
host feed and float32. The choice is made once per run (:func:`plan_execution`), said on
every trial's line and stored on the trial.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpo.errors import HpoError, OutOfMemory

if TYPE_CHECKING:
    import keras

    from hpo.data import Split
    from hpo.device import Gpu

# The uint8 rows of train+val may take this share of the memory this process may use on the
# GPU; the rest is for the model, its activations and the optimizer.
DEVICE_DATA_SHARE = 0.25
# One batch's activations may take the rest: beyond it a trial fails before compiling.
ACTIVATION_SHARE = 1 - DEVICE_DATA_SHARE
# Steps per call into the compiled step on a GPU: callbacks then run once per 16 batches
# instead of every batch, so a sub-millisecond step does not wait on Python.
GPU_STEPS_PER_EXECUTION = 16
BACKENDS_WITH_DEVICE_FEED = ("jax", "torch")  # Keras' TF adapter copies Python batches via host


@dataclass(frozen=True)
class Execution:
    """The resolved settings one run's trials use."""

    feed: str  # "device" or "host"
    precision: str  # "float32", "mixed_bfloat16" or "mixed_float16"
    steps_per_execution: int = 1
    why: str = ""  # why this feed, for the run's log
    gpu_memory_bytes: int = 0  # GPU memory this process may use (smallest GPU); 0: no GPU
    # Top up each epoch's last training batch to the full size (hpo.feed): one train-step
    # shape to compile instead of two. On JAX only, so TensorFlow studies learn as before.
    full_batches: bool = False

    def describe(self) -> str:
        return f"{self.feed} feed, {self.precision}"


HOST_FLOAT32 = Execution("host", "float32", 1, "defaults")


def plan_execution(train: Mapping[str, Any], data_bytes: int) -> Execution:
    """Resolve a space's ``[train]`` precision, feed and steps_per_execution for the backend
    Keras will load and the GPUs ``nvidia-smi`` shows this process, without loading the
    backend: a worker plans before it forks the child processes that train (hpo.study.isolate),
    and TensorFlow must not be running in a process that forks. ``data_bytes`` is what the
    device feed would place on the device: the uint8 rows of train and val."""
    from hpo.device import backend_name, gpus, memory_fraction

    backend, cards = backend_name(), gpus()
    memory = int(memory_fraction() * min(g.memory_bytes for g in cards)) if cards else 0
    precision = choose_precision(str(train.get("precision", "auto")), cards)
    feed, why = choose_feed(str(train.get("feed", "auto")), backend, memory, data_bytes)
    steps = int(train.get("steps_per_execution", 0))
    if backend == "torch" and steps > 1:  # Keras' torch trainer refuses anything else
        raise HpoError(
            "[train] steps_per_execution must be 1 (or 0, automatic) on the torch backend"
        )
    if steps == 0:
        steps = GPU_STEPS_PER_EXECUTION if cards and backend != "torch" else 1
    return Execution(feed, precision, steps, why, memory, full_batches=backend == "jax")


def choose_precision(requested: str, cards: Sequence[Gpu]) -> str:
    """``requested``, or for ``"auto"``: bfloat16 where every GPU computes it natively
    (compute capability 8.0 and up), float32 elsewhere (older GPUs, no GPU, unknown)."""
    if requested != "auto":
        return requested
    native = bool(cards) and all((g.compute_capability or 0) >= 8.0 for g in cards)
    return "mixed_bfloat16" if native else "float32"


def choose_feed(
    requested: str, backend: str, gpu_memory_bytes: int, data_bytes: int
) -> tuple[str, str]:
    """The feed and why: the device feed when the images fit in DEVICE_DATA_SHARE of the GPU
    memory this process may use (``gpu_memory_bytes``, 0 without a GPU), on a backend where
    Keras keeps such batches on the device."""
    if requested == "device" and backend not in BACKENDS_WITH_DEVICE_FEED:
        raise HpoError(
            f'[train] feed = "device" needs the jax or torch backend, not {backend} '
            '(Keras copies Python batches through the host there); use "auto" or "host"'
        )
    if requested != "auto":
        return requested, "asked for in the space"
    if not gpu_memory_bytes:
        return "host", "no GPU"
    if backend not in BACKENDS_WITH_DEVICE_FEED:
        return "host", f"the {backend} backend copies Python batches through the host"
    budget = DEVICE_DATA_SHARE * gpu_memory_bytes
    mib, budget_mib = data_bytes / 2**20, budget / 2**20
    if data_bytes > budget:
        return "host", f"train+val images ({mib:.0f} MiB) exceed {budget_mib:.0f} MiB of GPU memory"
    return "device", f"train+val images ({mib:.0f} MiB) fit in {budget_mib:.0f} MiB of GPU memory"


def feed_bytes(*splits: Split | None) -> int:
    """Bytes the device feed places on the device for these splits (uint8 rows)."""
    return sum(len(s) * int(s.images[0].nbytes) for s in splits if s is not None and len(s))


def activation_bytes(model: keras.Model, batch_size: int) -> int:
    """Bytes of every layer's output for one batch of ``batch_size``, in the dtype each layer
    computes in: roughly what a training step keeps for its backward pass (a compiler fuses
    some of it away; the weights, the optimizer's state and the workspace come on top)."""
    import numpy as np  # Keras registers "bfloat16" with NumPy (ml_dtypes)

    total = 0
    for layer in model.layers:
        outputs = layer.output if isinstance(layer.output, list | tuple) else [layer.output]
        for tensor in outputs:
            elements = batch_size * math.prod(dim or 1 for dim in tensor.shape[1:])
            total += elements * np.dtype(str(tensor.dtype)).itemsize
    return total


def check_activations_fit(model: keras.Model, batch_size: int, gpu_memory_bytes: int) -> None:
    """Fail the trial at once, as out of memory, when one batch's activations alone exceed
    ACTIVATION_SHARE of the GPU memory this process may use (``gpu_memory_bytes``; 0, no GPU:
    no check). A far too big configuration does not fail fast by itself: on JAX on an H100,
    XLA's convolution autotuner was still compiling such trials after 110 and 136 s (this
    estimate: 1.05 times the GPU for the smaller one), while the largest trials of the GPU
    Animals-10 space trained at 0.55 times their worker's share
    (bench/results/gpu-h100-2026-11-22/)."""
    if not gpu_memory_bytes:
        return
    need, room = activation_bytes(model, batch_size), ACTIVATION_SHARE * gpu_memory_bytes
    if need > room:
        raise OutOfMemory(
            f"out of memory before training: a batch of {batch_size} needs about "
            f"{need / 2**30:.1f} GiB of activations, more than the {room / 2**30:.1f} GiB left "
            "of the GPU memory this process may use; lower batch_size, filters or image_size"
        )


@contextlib.contextmanager
def precision_scope(precision: str) -> Iterator[None]:
    """Layers made inside compute in ``precision`` (variables stay float32); the global
    Keras policy is restored afterwards, so the caller's later models are unaffected."""
    import keras

    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)
