"""What fit's own validation pass predicted, so a trial needs no second pass.

A trial records its validation macro-F1 and confusion matrix (of the model after its last
epoch) and its validation probabilities at its scoring epoch (for ensembles,
:mod:`hpo.predictions`). Predicting the validation split again for either cost a whole
extra forward pass plus tracing a predict function: for the confusion matrix, most of
hpo's overhead per trial against a bare ``model.fit`` (``hpo bench``'s overhead line); for
the probabilities, about 4% of a trial, paid on every epoch that raised the best. ``fit``
already predicts every validation image once per epoch, so both are compiled metrics read
by a callback once the pass is over (Keras resets metrics when a validation pass begins):

- :class:`ConfusionMatrix` counts (true, predicted) pairs, a few ops per batch;
  :class:`ValidationConfusion` keeps the last pass's counts.
- :class:`ValidationOutputs` copies each batch's outputs into a variable (one scatter
  per batch); :class:`ScoringEpochProbabilities` keeps them from each epoch that
  raises the trial's score.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
from keras import ops

from hpo.head import class_probabilities
from hpo.score import MONITOR


class ConfusionMatrix(keras.metrics.Metric):
    """Counts (true class, predicted class) pairs; rows true, columns predicted, as
    :func:`hpo.metrics.confusion_matrix`. Works for the one-sigmoid binary head (class 1 when
    p > 0.5, as ``accuracy`` and :func:`hpo.training.evaluate` decide) and softmax heads
    with class-index or one-hot labels. Its result adds nothing to fit's logs: the counts
    are read from :attr:`matrix`, so the history a trial records is unchanged."""

    def __init__(self, num_classes: int, name: str = "confusion_matrix", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.matrix = self.add_variable(
            shape=(self.num_classes, self.num_classes),
            initializer="zeros",
            dtype="float32",  # exact counts up to 2**24 a cell
            name="matrix",
        )

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        classes = self.num_classes
        if y_pred.shape[-1] == 1:
            predicted = ops.cast(ops.reshape(y_pred, (-1,)) > 0.5, "int32")
        else:
            predicted = ops.argmax(y_pred, axis=-1)
        if len(y_true.shape) > 1 and y_true.shape[-1] == classes == y_pred.shape[-1]:
            true = ops.argmax(y_true, axis=-1)  # one-hot labels (smoothed loss)
        else:
            true = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        counts = ops.matmul(
            ops.transpose(ops.one_hot(true, classes)), ops.one_hot(predicted, classes)
        )
        self.matrix.assign_add(ops.cast(counts, "float32"))

    def reset_state(self) -> None:
        self.matrix.assign(ops.zeros((self.num_classes, self.num_classes), dtype="float32"))

    def result(self) -> dict[str, Any]:
        return {}  # nothing in the logs (Keras flattens a dict result into them)


class ValidationConfusion(keras.callbacks.Callback):
    """Compile :attr:`metric` into the model and pass this callback to ``fit``: after fit,
    :attr:`matrix` holds the counts of its last validation pass (Keras resets metrics when
    a validation pass begins and calls ``on_test_end`` when it is complete)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.metric = ConfusionMatrix(num_classes)
        self.matrix: np.ndarray | None = None

    def on_test_end(self, logs: Mapping[str, Any] | None = None) -> None:
        self.matrix = np.rint(ops.convert_to_numpy(self.metric.matrix)).astype(np.int64)


class ValidationOutputs(keras.metrics.Metric):
    """The head's outputs for the ``rows`` images of one validation pass, in feeding order.

    Keras updates compiled metrics in training steps too; those batches land in
    ``batch_size`` spare rows past the split's (``start`` stops at ``rows``), and the
    reset before the validation pass clears them. Its result adds nothing to fit's logs."""

    def __init__(
        self,
        rows: int,
        width: int,
        batch_size: int,
        name: str = "validation_outputs",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.rows = int(rows)
        self.outputs = self.add_variable(
            shape=(self.rows + int(batch_size), int(width)),
            initializer="zeros",
            dtype="float32",
            name="outputs",
        )
        self.seen = self.add_variable(shape=(), initializer="zeros", dtype="int32", name="seen")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        seen = self.seen.value
        count = ops.shape(y_pred)[0]
        # a scatter, not ops.slice_update: on TensorFlow that is an XLA op, which outside a
        # compiled function cost about 1 ms a step on CPU (bench/bench_val_probs.py)
        rows = ops.minimum(seen, self.rows) + ops.arange(count, dtype="int32")
        update = ops.cast(y_pred, "float32")
        self.outputs.assign(ops.scatter_update(self.outputs.value, rows[:, None], update))
        self.seen.assign(seen + ops.cast(count, "int32"))

    def reset_state(self) -> None:
        self.outputs.assign(ops.zeros(self.outputs.shape, dtype="float32"))
        self.seen.assign(0)

    def result(self) -> dict[str, Any]:
        return {}


class ScoringEpochProbabilities(keras.callbacks.Callback):
    """Keeps the validation probabilities of every epoch that raises the best validation
    accuracy (the trial's score, :mod:`hpo.score`), as float16, rows in sorted order
    (:func:`hpo.predictions.validation_rows`). :func:`hpo.training.train` compiles
    :attr:`metric` (made by :meth:`collect`) into the model; ``seconds`` is what reading
    it cost. Put it before the pruner: a pruned epoch can still be the trial's best.
    ``best``: a continued fit's inherited best, which only a better epoch replaces."""

    def __init__(self, best: float | None = None) -> None:
        super().__init__()
        self.best = best
        self.probs: np.ndarray | None = None
        self.seconds = 0.0
        self.metric: ValidationOutputs | None = None
        self._sorting: np.ndarray | None = None

    def collect(self, rows: int, width: int, batch_size: int) -> ValidationOutputs:
        """The metric to compile for a validation pass over ``rows`` images."""
        self.metric = ValidationOutputs(rows, width, batch_size)
        return self.metric

    def feeding_rows(self, rows: np.ndarray) -> None:
        """The cache rows in the order the validation pass feeds them."""
        self._sorting = np.argsort(rows, kind="stable")

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        value = (logs or {}).get(MONITOR)
        if value is None or (self.best is not None and float(value) <= self.best):
            return
        assert self.metric is not None and self._sorting is not None, "see train()"
        started = time.perf_counter()
        self.best = float(value)
        outputs = ops.convert_to_numpy(self.metric.outputs)[: self.metric.rows]
        self.probs = class_probabilities(outputs[self._sorting]).astype("float16")
        self.seconds += time.perf_counter() - started
