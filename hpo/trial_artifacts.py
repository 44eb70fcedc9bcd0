"""Files a trial leaves next to its numbers: its learning curves as a PNG artifact.

optuna-dashboard already plots the per-epoch validation accuracy (the intermediate values
the pruner reads), but not the training curves or the loss, which are what tell
over-fitting from under-fitting. So every finished trial uploads one two-panel picture
(loss, accuracy; train and validation) into the artifact store, and the dashboard shows it
on the trial's page.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import optuna
from matplotlib.figure import Figure

from hpo.artifacts import attach

CURVE_FILENAME = "learning-curve-trial-{number}.png"


def attach_learning_curve(trial: optuna.Trial, history: Mapping[str, Sequence[float]],
                          state: str, artifacts: str | Path | None = None) -> str | None:
    """Draw ``history`` and upload it as an artifact of ``trial``; returns the artifact id,
    or None for a trial that failed before its first epoch (nothing to draw).

    Call it *before* ``study.tell``: Optuna records the artifact on the trial, and a
    finished trial can no longer be changed.
    """
    if not history.get("loss"):
        return None
    with tempfile.TemporaryDirectory(prefix="hpo-curve-") as tmp:
        path = Path(tmp) / CURVE_FILENAME.format(number=trial.number)
        _learning_curve(history, path, f"trial {trial.number} ({state.lower()})")
        return attach(trial, path, path=artifacts)


# TODO(lead): replace with hpo.plots.learning_curve(history, path, title) when the export
# branch lands; the signature is the same on purpose.
def _learning_curve(history: Mapping[str, Sequence[float]], path: Path, title: str) -> Path:
    """Loss and accuracy per epoch, train and validation, side by side, as a PNG.

    ``matplotlib.figure.Figure`` (not pyplot) so that a long study never accumulates open
    figures and no GUI backend is ever picked: the Agg canvas renders the file.
    """
    fig = Figure(figsize=(10, 4), layout="constrained")
    fig.suptitle(title)
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy")):
        for key, name, style in ((metric, "train", "-o"), (f"val_{metric}", "validation", "-s")):
            values = history.get(key, [])
            if values:
                ax.plot(range(1, len(values) + 1), values, style, label=name, markersize=4)
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=100)
    return path
