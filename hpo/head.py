"""The classifier head's convention, decided once: two classes get ONE sigmoid unit (the
probability of class 1), more classes a softmax over all of them.

One unit trains the binary case with binary cross-entropy, which is what Keras optimises
best for two classes; everything downstream must then agree on it: the model builds the
head, the loss and the feeds shape labels for it, predictions widen it back to one column
per class, and the bundle describes it. Each of them asks this module.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def single_sigmoid(num_classes: int) -> bool:
    """Whether ``num_classes`` classes get the one-unit sigmoid head."""
    return num_classes == 2


def head_units(num_classes: int) -> int:
    """Output units of the head: 1 for two classes, else one per class."""
    return 1 if single_sigmoid(num_classes) else num_classes


def head_activation(num_classes: int) -> str:
    return "sigmoid" if single_sigmoid(num_classes) else "softmax"


def loss_targets(labels: np.ndarray, sigmoid: bool) -> np.ndarray:
    """Integer labels shaped for the loss: (N, 1) float32 for the sigmoid head, int32 else."""
    return labels.astype("float32").reshape(-1, 1) if sigmoid else labels.astype("int32")


def class_probabilities(outputs: np.ndarray) -> np.ndarray:
    """The head's outputs as one probability column per class, (N, classes) float32."""
    outputs = np.asarray(outputs)
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        outputs = np.concatenate([1.0 - outputs, outputs], axis=1)
    return outputs.astype("float32")


def describe_head(num_classes: int) -> str:
    """The head in words, for the bundle's preprocessing.json and model card."""
    return (
        "one sigmoid unit: probability of class 1 in labels.json"
        if single_sigmoid(num_classes)
        else "softmax over the classes in labels.json order"
    )


def predict_proba(
    model: Any, images: np.ndarray, batch_size: int = 64, tta: bool = False
) -> np.ndarray:
    """Class probabilities, shape (N, classes), also for the one-unit sigmoid binary head,
    from anything with ``predict_on_batch`` (a Keras model, :class:`hpo.onnx_runtime.OnnxModel`).
    ``tta``: the mean over each image and its mirror image (test-time flip averaging; the
    training augmentation flips horizontally, so both views are ones the model learnt)."""
    if tta:
        return (
            predict_proba(model, images, batch_size)
            + predict_proba(model, np.asarray(images)[:, :, ::-1], batch_size)
        ) / 2
    chunks = [
        np.asarray(model.predict_on_batch(np.asarray(images[i : i + batch_size], dtype="float32")))
        for i in range(0, len(images), batch_size)
    ]
    return class_probabilities(
        np.concatenate(chunks) if chunks else np.zeros((0, model.output_shape[-1]), "float32")
    )
