"""Classification metrics from a confusion matrix (numpy only: the same numbers on every
backend, and no scikit-learn/SciPy download for ten lines of arithmetic)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def classification_report(
    y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class precision/recall/F1/support, JSON-ready.

    Macro-F1 is reported next to accuracy because Animals-10 is imbalanced (1.4k to 4.8k
    images a class): a model can score well on accuracy while ignoring small classes.
    """
    return matrix_report(confusion_matrix(y_true, y_pred, len(classes)), classes)


def matrix_report(matrix: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """:func:`classification_report` from the confusion matrix alone (a trial counts its
    validation predictions during ``fit``, :mod:`hpo.validation_pass`)."""
    matrix = np.asarray(matrix, dtype=np.int64)
    tp = np.diag(matrix).astype(float)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = actual > 0
    total = int(matrix.sum())
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(actual[i]),
            }
            for i, name in enumerate(classes)
        },
        "confusion_matrix": matrix.tolist(),
    }
