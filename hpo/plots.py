"""Figures written next to models and trials (PNG files, for people and for the dashboard).

Figures are ``matplotlib.figure.Figure`` objects rendered by their Agg canvas, never
pyplot: no GUI backend is chosen (workers have no display), no notebook's backend is
switched, and no global figure list grows during a long search.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def learning_curve(history: Mapping[str, Sequence[float]], path: str | Path, title: str) -> Path:
    """Loss and accuracy per epoch (training and, where present, validation) side by side.

    ``history`` is Keras' per-epoch dict (``loss``, ``accuracy``, ``val_loss``, ...), as
    ``hpo.training.train`` and the trials' ``history`` attribute hold it.
    """
    fig = Figure(figsize=(10, 4))
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy"), strict=True):
        for key, label in ((metric, "training"), (f"val_{metric}", "validation")):
            values = list(history.get(key, []))
            if values:
                ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(title)
    # fixed margins: tight_layout measured every text box, the slowest step of each trial's
    # bookkeeping (hpo bench's overhead line)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.86, wspace=0.25)
    return _save(fig, path)


def confusion_matrix(
    matrix: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path, title: str
) -> Path:
    """Counts with true classes as rows and predictions as columns, shaded by row share so
    that a small class's errors are as visible as a large one's."""
    counts = np.asarray(matrix, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    size = max(4.0, 0.6 * len(classes) + 2.5)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="share of the true class")
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, labels=list(classes), rotation=45, ha="right")
    ax.set_yticks(ticks, labels=list(classes))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            ax.text(
                j,
                i,
                str(counts[i, j]),
                ha="center",
                va="center",
                color="white" if share[i, j] > 0.5 else "black",
                fontsize=8,
            )
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path
