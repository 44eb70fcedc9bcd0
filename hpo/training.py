"""The one training function. The search (``hpo.study``) and the export (``hpo.export``)
both call :func:`train`, so the model a user ships is trained exactly like the trial
that won.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np

from hpo.data import Split
from hpo.metrics import classification_report
from hpo.model import build_model

EpochHook = Callable[[int, dict[str, float]], None]

# Every trial builds a new model, hence new compiled step functions; TensorFlow's logger
# then warns about "retracing" each time, which is expected here and only noise.
logging.getLogger("tensorflow").setLevel(logging.ERROR)


@dataclass
class TrainResult:
    """A trained model and its per-epoch curves (``loss``, ``accuracy``, ``val_*``)."""

    model: keras.Model
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def epochs_run(self) -> int:
        return len(self.history.get("loss", []))


class Batches(keras.utils.PyDataset):
    """Keras-facing batches of a :class:`Split`, reshuffled each epoch when training."""

    def __init__(self, split: Split, batch_size: int, *, binary: bool, shuffle: bool,
                 seed: int = 0) -> None:
        super().__init__()
        self.split, self.batch_size, self.shuffle = split, int(batch_size), shuffle
        self._binary = binary
        self._rng = np.random.default_rng(seed)
        self._order = np.arange(len(split))
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(len(self.split) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        positions = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        rows = np.sort(self.split.rows[positions])  # sorted rows read a memmap sequentially
        x = np.asarray(self.split.images[rows], dtype="float32")
        y = np.asarray(self.split.labels[rows])
        return x, (y.astype("float32").reshape(-1, 1) if self._binary else y.astype("int32"))

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self._rng.shuffle(self._order)


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


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """Optimizer by name; SGD gets Nesterov momentum since plain SGD rarely wins a search."""
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)
    return {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
            "rmsprop": keras.optimizers.RMSprop}[name](learning_rate)


def fresh_session(seed: int) -> None:
    """Drop the previous model's graph and memory and seed every RNG; called before each fit
    so that a long search does not slowly fill the GPU."""
    keras.backend.clear_session()  # also runs the garbage collector (once is enough: seconds)
    keras.utils.set_random_seed(seed)


def compiled_model(params: Mapping[str, Any], num_classes: int, image_size: int, *,
                   augment: bool = True) -> keras.Model:
    """The CNN for ``params``, compiled with its optimizer, loss and accuracy metric (also
    what ``hpo bench`` fits bare, to measure what the rest of a trial costs)."""
    model = build_model(params, num_classes, image_size, augment=augment)
    model.compile(
        optimizer=make_optimizer(str(params["optimizer"]), float(params["learning_rate"])),
        loss="binary_crossentropy" if num_classes == 2 else "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def train(params: Mapping[str, Any], train_split: Split, *, num_classes: int, epochs: int,
          val_split: Split | None = None, augment: bool = True, seed: int = 0,
          callbacks: Sequence[keras.callbacks.Callback] = (),
          on_epoch: EpochHook | None = None, history: dict[str, list[float]] | None = None,
          initial_epoch: int = 0, weights: str | None = None) -> TrainResult:
    """Build the CNN for ``params`` and fit it on the uint8 images of ``train_split``.

    ``weights`` (a ``.weights.h5`` file of the same configuration) continues an earlier fit,
    counting epochs from ``initial_epoch`` up to ``epochs``: how KerasTuner's Hyperband
    promotes a configuration without training it again from scratch.

    ``history`` may be passed in so the caller keeps the curves of a fit that a callback
    interrupted (a pruned trial raises out of ``fit``). ``on_epoch(epoch, logs)`` runs after
    each epoch, before ``callbacks``, so progress shows the epoch that got a trial pruned.
    """
    fresh_session(seed)
    binary = num_classes == 2
    model = compiled_model(params, num_classes, train_split.image_size, augment=augment)
    if weights is not None:
        model.load_weights(weights)
    batch_size = int(params["batch_size"])
    train_data = Batches(train_split, batch_size, binary=binary, shuffle=True, seed=seed)
    val_data = (None if val_split is None
                else Batches(val_split, batch_size, binary=binary, shuffle=False))

    history = {} if history is None else history
    started = time.perf_counter()
    model.fit(train_data, validation_data=val_data, epochs=int(epochs), verbose=0,
              initial_epoch=int(initial_epoch), callbacks=[_EpochLog(history, on_epoch), *callbacks])
    return TrainResult(model=model, history=history, seconds=time.perf_counter() - started)


def predict_proba(model: keras.Model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Class probabilities, shape (N, classes), also for the one-unit sigmoid binary head."""
    chunks = [np.asarray(model.predict_on_batch(np.asarray(images[i:i + batch_size], dtype="float32")))
              for i in range(0, len(images), batch_size)]
    probs = np.concatenate(chunks) if chunks else np.zeros((0, model.output_shape[-1]), "float32")
    if probs.shape[1] == 1:
        probs = np.concatenate([1.0 - probs, probs], axis=1)
    return probs.astype("float32")


def evaluate(model: keras.Model, split: Split, classes: Sequence[str],
             batch_size: int = 64) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class scores and confusion matrix of ``model`` on ``split``."""
    rows = np.sort(split.rows)
    probs = np.concatenate([predict_proba(model, split.images[rows[i:i + 1024]], batch_size)
                            for i in range(0, len(rows), 1024)]) if len(rows) else np.zeros((0, 2))
    return classification_report(split.labels[rows], probs.argmax(axis=1), classes)
