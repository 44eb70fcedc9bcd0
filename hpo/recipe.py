"""How a model is compiled from a trial's parameters: optimizer (with AdamW's weight decay),
learning-rate schedule and loss (with label smoothing).

:func:`hpo.training.train` is the only caller, so search, export and benchmarks compile
alike. Only built-in Keras optimizers, schedules and losses are used: nothing custom ends up
in a saved model, and the exported bundle (saved without its optimizer) loads in safe mode.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import keras

from hpo.errors import HpoError
from hpo.head import single_sigmoid
from hpo.space import SCHEDULES

# Cosine warms up linearly for one epoch, at most this share of the run: long enough that
# Adam's first, noisy steps do not knock freshly initialised batch norm off, short enough not
# to waste a short trial.
WARMUP_SHARE = 0.1


def make_optimizer(
    name: str,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    weight_decay: float = 0.004,
) -> keras.optimizers.Optimizer:
    """Optimizer by name; SGD gets Nesterov momentum since plain SGD rarely wins a search.
    ``weight_decay`` is AdamW's decoupled decay (its Keras default is 0.004); the other
    optimizers are regularised by the model's L2 penalty instead."""
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    return {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop}[name](learning_rate)


def learning_rate(
    params: Mapping[str, Any], steps_per_epoch: int, epochs: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """``constant``: the learning rate. ``cosine``: linear warm-up from a tenth of it over one
    epoch (at most 10% of the steps), then cosine decay to zero at the end of ``epochs``, so
    a schedule always ends with its trial however many epochs the space gives."""
    peak = float(params["learning_rate"])
    kind = str(params.get("lr_schedule", "constant"))
    if kind == "constant":
        return peak
    if kind != "cosine":
        raise HpoError(f"unknown lr_schedule {kind!r} (expected: {', '.join(SCHEDULES)})")
    total = max(1, int(steps_per_epoch) * int(epochs))
    warmup = min(int(steps_per_epoch), int(math.floor(WARMUP_SHARE * total)))
    return keras.optimizers.schedules.CosineDecay(
        peak / 10 if warmup else peak,
        decay_steps=max(1, total - warmup),
        warmup_target=peak if warmup else None,
        warmup_steps=warmup,
    )


def make_loss(num_classes: int, label_smoothing: float = 0.0) -> keras.losses.Loss:
    """Cross-entropy matching the model's head: binary for the one-sigmoid two-class head
    (smoothing pulls its 0/1 targets towards 0.5), sparse categorical for softmax, or
    categorical on one-hot labels when smoothing (the sparse loss has no smoothing)."""
    if single_sigmoid(num_classes):
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
    if label_smoothing:
        return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy()


def compile_model(
    model: keras.Model,
    params: Mapping[str, Any],
    num_classes: int,
    steps_per_epoch: int,
    epochs: int,
    *,
    steps_per_execution: int = 1,
    extra_metrics: Sequence[keras.metrics.Metric] = (),
) -> bool:
    """Compile ``model`` for ``params``; returns whether the loss wants one-hot labels
    (see :class:`OneHot`). ``steps_per_execution`` batches run per call from the host;
    ``extra_metrics`` are compiled beside accuracy (a trial's validation confusion counts)."""
    smoothing = float(params.get("label_smoothing", 0.0))
    model.compile(
        optimizer=make_optimizer(
            str(params["optimizer"]),
            learning_rate(params, steps_per_epoch, epochs),
            float(params.get("weight_decay", 0.004)),
        ),
        loss=make_loss(num_classes, smoothing),
        metrics=["accuracy", *extra_metrics],
        jit_compile="auto",  # XLA on JAX and TensorFlow; PyTorch runs eagerly
        steps_per_execution=steps_per_execution,
    )
    return num_classes > 2 and smoothing > 0


class OneHot(keras.utils.PyDataset):
    """Batches of (x, class index) as (x, one-hot row), for the smoothed categorical loss."""

    def __init__(self, batches: keras.utils.PyDataset, num_classes: int) -> None:
        super().__init__()
        self.batches, self.num_classes = batches, num_classes

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        x, y = self.batches[index]  # host arrays or, from the device feed, device tensors
        return x, keras.ops.one_hot(keras.ops.reshape(y, (-1,)), self.num_classes)

    def on_epoch_end(self) -> None:
        self.batches.on_epoch_end()
