"""The one training function. The search (``hpo.study``) and the export (``hpo.export``)
both call :func:`train`, so the model a user ships is trained exactly like the trial
that won.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from hpo.data import Split
from hpo.errors import out_of_memory_fails_trial
from hpo.execution import (
    Execution,
    check_activations_fit,
    feed_bytes,
    plan_execution,
    precision_scope,
)
from hpo.feed import feed_batches
from hpo.head import head_units, predict_proba, single_sigmoid
from hpo.metrics import classification_report
from hpo.model import build_model
from hpo.recipe import OneHot, compile_model
from hpo.timing import EpochTimes
from hpo.validation_pass import ScoringEpochProbabilities, ValidationConfusion

EpochHook = Callable[[int, dict[str, float]], None]


@dataclass
class TrainResult:
    """A trained model and its per-epoch curves (``loss``, ``accuracy``, ``val_*``)."""

    model: keras.Model
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    # counts of the last validation pass (rows true, columns predicted); None without val
    val_confusion: np.ndarray | None = None

    @property
    def epochs_run(self) -> int:
        return len(self.history.get("loss", []))


class _EpochLog(keras.callbacks.Callback):
    """Collects per-epoch logs even when a later callback (the pruner) stops training."""

    def __init__(self, history: dict[str, list[float]], hook: EpochHook | None) -> None:
        super().__init__()
        self.history, self.hook = history, hook

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        logs = {k: float(v) for k, v in (logs or {}).items()}
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)
        if self.hook is not None:
            self.hook(epoch, logs)


class _EpochClock(keras.callbacks.Callback):
    """Times each epoch and its validation pass into :class:`EpochTimes`; first among the
    callbacks, so an epoch that gets a trial pruned is timed before the pruner raises."""

    def __init__(self, times: EpochTimes) -> None:
        super().__init__()
        self.times = times
        self._epoch = self._val = 0.0

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._epoch, self._val = time.perf_counter(), 0.0

    def on_test_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self._val = time.perf_counter()

    def on_test_end(self, logs: Mapping[str, Any] | None = None) -> None:
        self._val = time.perf_counter() - self._val

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.times.epoch.append(round(time.perf_counter() - self._epoch, 3))
        self.times.validation.append(round(self._val, 3))


class StopOnRequest(keras.callbacks.Callback):
    """Raises ``KeyboardInterrupt`` at the next batch boundary once ``requested()`` is true.

    A Ctrl-C delivered as an exception can land anywhere, even inside a garbage-collector
    callback that swallows it; a flag checked here stops training at a known point.
    """

    def __init__(self, requested: Callable[[], bool]) -> None:
        super().__init__()
        self.requested = requested

    def _check(self, *_: Any, **__: Any) -> None:
        if self.requested():
            raise KeyboardInterrupt

    on_train_batch_end = on_test_batch_end = on_epoch_end = _check


def fresh_session(seed: int) -> None:
    """Drop the previous model's graph and memory and seed every RNG; called before each fit
    so that a long search does not slowly fill the GPU."""
    keras.backend.clear_session()  # also runs the garbage collector (once is enough: seconds)
    keras.utils.set_random_seed(seed)


def build_training_state(model: keras.Model, batches: keras.utils.PyDataset) -> None:
    """Create the optimizer's, loss's and metrics' variables before ``fit`` on TensorFlow.

    TensorFlow traces a compiled function twice when its first trace creates variables, and
    Keras creates these lazily inside the first train step. Built here, on two images of the
    first batch, the train step is traced once: a 2-epoch fit of a small CNN at 16 px took
    2.4 s instead of 3.2 s. JAX and PyTorch build them before their first step anyway."""
    if keras.backend.backend() != "tensorflow":
        return
    x, y = (np.asarray(part)[:2] for part in batches[0])
    model.optimizer.build(model.trainable_variables)
    predicted = model(x, training=False)
    model.compute_loss(x, y, predicted)
    model.compute_metrics(x, y, predicted, sample_weight=None)
    model.reset_metrics()


def compiled_model(
    params: Mapping[str, Any],
    num_classes: int,
    image_size: int,
    *,
    augment: bool = True,
    precision: str = "float32",
    steps_per_execution: int = 1,
    steps_per_epoch: int = 1,
    schedule_epochs: int = 1,
    extra_metrics: Sequence[keras.metrics.Metric] = (),
) -> tuple[keras.Model, bool]:
    """The CNN for ``params`` built in ``precision`` and compiled by :mod:`hpo.recipe` (also
    what benchmarks fit bare, to measure what the rest of a trial costs); returns the model
    and whether its loss wants one-hot labels. ``steps_per_epoch`` and ``schedule_epochs``
    size a learning-rate schedule."""
    with precision_scope(precision):  # the head stays float32 (hpo.model)
        model = build_model(params, num_classes, image_size, augment=augment)
    one_hot = compile_model(
        model,
        params,
        num_classes,
        steps_per_epoch,
        schedule_epochs,
        steps_per_execution=steps_per_execution,
        extra_metrics=extra_metrics,
    )
    return model, one_hot


def train(
    params: Mapping[str, Any],
    train_split: Split,
    *,
    num_classes: int,
    epochs: int,
    val_split: Split | None = None,
    augment: bool = True,
    seed: int = 0,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    on_epoch: EpochHook | None = None,
    history: dict[str, list[float]] | None = None,
    initial_epoch: int = 0,
    weights: str | None = None,
    execution: Execution | None = None,
    schedule_epochs: int | None = None,
    times: EpochTimes | None = None,
    scoring_probabilities: ScoringEpochProbabilities | None = None,
) -> TrainResult:
    """Build the CNN for ``params`` and fit it on the uint8 images of ``train_split``.

    ``weights`` (a ``.weights.h5`` file of the same configuration) continues an earlier fit,
    counting epochs from ``initial_epoch`` up to ``epochs``: how KerasTuner's Hyperband
    promotes a configuration without training it again from scratch.

    ``history`` may be passed in so the caller keeps the curves of a fit that a callback
    interrupted (a pruned trial raises out of ``fit``); ``times`` likewise keeps the wall
    seconds of each epoch and its validation pass (:class:`EpochTimes`).
    ``on_epoch(epoch, logs)`` runs after each epoch, before ``callbacks``, so progress shows
    the epoch that got a trial pruned.
    ``execution`` (feed, precision, steps per execution) defaults to what
    :func:`hpo.execution.plan_execution` picks for this machine.
    ``schedule_epochs`` (default ``epochs``) is how long a learning-rate schedule runs: the
    export stops a retrained trial at its best epoch of the schedule the trial had.
    A configuration too big for the device's memory raises :class:`hpo.errors.OutOfMemory`.
    With ``val_split``, ``val_confusion`` of the result counts the last validation pass
    and ``scoring_probabilities`` (a callback the caller keeps, as a pruned fit raises)
    collects the scoring epoch's probabilities (:mod:`hpo.validation_pass`), so the caller
    needs no second pass over the split.
    """
    execution = execution or plan_execution({}, feed_bytes(train_split, val_split))
    with out_of_memory_fails_trial():  # too big for this machine: this trial fails alone
        fresh_session(seed)
        binary = single_sigmoid(num_classes)
        batch_size = int(params["batch_size"])
        steps_per_epoch = math.ceil(len(train_split) / batch_size)
        confusion, scoring, collected = None, None, []  # what fit's validation pass keeps
        if val_split is not None:
            confusion, scoring = ValidationConfusion(num_classes), scoring_probabilities
            collected.append(confusion.metric)
            if scoring is not None:
                units = head_units(num_classes)
                collected.append(scoring.collect(len(val_split), units, batch_size))
        model, one_hot = compiled_model(
            params,
            num_classes,
            train_split.image_size,
            augment=augment,
            precision=execution.precision,
            steps_per_execution=max(1, min(execution.steps_per_execution, steps_per_epoch)),
            steps_per_epoch=steps_per_epoch,
            schedule_epochs=schedule_epochs or int(epochs),
            extra_metrics=collected,
        )
        check_activations_fit(model, min(batch_size, len(train_split)), execution.gpu_memory_bytes)
        if weights is not None:
            model.load_weights(weights)
        batches = feed_batches(execution.feed)
        train_data = batches(
            train_split,
            batch_size,
            binary=binary,
            shuffle=True,
            seed=seed,
            full_batches=execution.full_batches,
        )
        val_data = (
            None
            if val_split is None
            else batches(val_split, batch_size, binary=binary, shuffle=False)
        )
        if scoring is not None and val_data is not None:
            scoring.feeding_rows(val_data.rows)
        if one_hot:
            train_data = OneHot(train_data, num_classes)
            val_data = None if val_data is None else OneHot(val_data, num_classes)
        build_training_state(model, train_data)

        history = {} if history is None else history
        started = time.perf_counter()
        model.fit(
            train_data,
            validation_data=val_data,
            epochs=int(epochs),
            verbose=0,
            initial_epoch=int(initial_epoch),
            callbacks=[
                _EpochClock(EpochTimes() if times is None else times),
                _EpochLog(history, on_epoch),
                *([confusion] if confusion else []),
                *([scoring] if scoring else []),
                *callbacks,
            ],
        )
    return TrainResult(
        model=model,
        history=history,
        seconds=time.perf_counter() - started,
        val_confusion=None if confusion is None else confusion.matrix,
    )


def split_probabilities(
    model: keras.Model, split: Split, batch_size: int = 64, tta: bool = False
) -> np.ndarray:
    """Class probabilities of ``model`` on ``split``, rows in sorted order, read from the
    cache 1,024 at a time (``tta``: flip-averaged). What a test report is made of; callers
    that also need the probabilities (the ONNX check, the bench) keep them instead of
    predicting the split again."""
    rows = np.sort(split.rows)
    with out_of_memory_fails_trial():
        if not len(rows):
            return np.zeros((0, 2))
        return np.concatenate(
            [
                predict_proba(model, split.images[rows[i : i + 1024]], batch_size, tta)
                for i in range(0, len(rows), 1024)
            ]
        )


def split_report(probs: np.ndarray, split: Split, classes: Sequence[str]) -> dict[str, Any]:
    """The report of :func:`split_probabilities`' ``probs`` against ``split``'s labels."""
    return classification_report(split.labels[np.sort(split.rows)], probs.argmax(axis=1), classes)


def evaluate(
    model: keras.Model,
    split: Split,
    classes: Sequence[str],
    batch_size: int = 64,
    tta: bool = False,
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class scores and confusion matrix of ``model`` on ``split``
    (``tta``: of its flip-averaged predictions)."""
    return split_report(split_probabilities(model, split, batch_size, tta), split, classes)
