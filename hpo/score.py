"""A trial's score: the one number that search, pruner, bench and export agree on.

A trial scores the **best validation accuracy over its epochs** (what KerasTuner ranks by),
not the accuracy after its last epoch. Validation curves on a couple of thousand images are
noisy (a real trial read 0.721 at epoch 6 and 0.612 at epoch 9); ranking by the last epoch
ranks by that noise, while the export retrains the winner for exactly its best epoch, so the
best epoch is also what a user ships. The pruner is fed the same number epoch by epoch (the
best so far, a smoothed curve that a single bad epoch cannot drop), so a trial is pruned
on the quantity it would be ranked by. Both numbers are recorded on every trial.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MONITOR = "val_accuracy"  # the curve a score is read from (and the dashboard plots)


@dataclass(frozen=True)
class Score:
    """A trial's validation accuracy at its best epoch (its score) and at its last."""

    best: float
    best_epoch: int  # 1-based: the epochs to retrain for
    last: float


def best_so_far(values: Sequence[float]) -> list[float]:
    """The running maximum of a validation curve: what the pruner compares, epoch by epoch."""
    out: list[float] = []
    for value in values:
        out.append(value if not out else max(out[-1], value))
    return out


def score(history: Mapping[str, Sequence[float]]) -> Score | None:
    """The score of a trial with per-epoch ``history``; None before its first epoch. Ties go
    to the earlier epoch (the same accuracy for less training)."""
    curve = list(history.get(MONITOR, []))
    if not curve:
        return None
    best_index = max(range(len(curve)), key=lambda i: (curve[i], -i))
    return Score(best=float(curve[best_index]), best_epoch=best_index + 1, last=float(curve[-1]))
