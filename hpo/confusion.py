"""The confusion matrix of fit's own validation pass, so a trial needs no second pass.

A trial records its validation macro-F1 and confusion matrix (of the model after its last
epoch). Predicting the validation split again after ``fit`` cost a whole extra forward pass
plus tracing a predict function, most of hpo's overhead per trial against a bare
``model.fit`` (``hpo bench``'s overhead line). ``fit`` already predicts every validation
image once per epoch, with the final weights at the last epoch; :class:`ConfusionMatrix`
counts those predictions as a compiled metric (a few ops per batch) and
:class:`ValidationConfusion` keeps the counts of the latest validation pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
from keras import ops


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
