"""A trial's score: the one number that search, pruner, bench and export agree on.

A trial scores the **best validation accuracy over its epochs** (what KerasTuner ranks by),
not the accuracy after its last epoch. Validation curves on a couple of thousand images are
noisy (a real trial read 0.721 at epoch 6 and 0.612 at epoch 9); ranking by the last epoch
ranks by that noise, while the export retrains the winner to about its best epoch (below),
so the score is what a user ships. The pruner is fed the same number epoch by epoch (the
best so far, a smoothed curve that a single bad epoch cannot drop), so a trial is pruned
on the quantity it would be ranked by. Both numbers are recorded on every trial.

How long the export retrains is a second question with the same noise: the best epoch of a
noisy curve is itself a draw. The export retrains for the **latest epoch whose accuracy is
within one standard error of the best** (the binomial error of an accuracy on the validation
images): epochs the validation split cannot tell apart from the best are equally good
guesses, and of those the latest undertrains least a model that now sees train+val. ``hpo
bench`` measured why: winners retrained for an earlier, noise-picked best epoch tested lower.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MONITOR = "val_accuracy"  # the curve a score is read from (and the dashboard plots)


@dataclass(frozen=True)
class Score:
    """A trial's validation accuracy at its best epoch (its score) and at its last."""

    best: float
    best_epoch: int  # 1-based
    last: float
    retrain_epoch: int  # 1-based: the latest epoch within one standard error of the best


def best_so_far(values: Sequence[float]) -> list[float]:
    """The running maximum of a validation curve: what the pruner compares, epoch by epoch."""
    out: list[float] = []
    for value in values:
        out.append(value if not out else max(out[-1], value))
    return out


def standard_error(accuracy: float, images: int) -> float:
    """The binomial standard error of an accuracy measured on ``images`` images."""
    return math.sqrt(max(accuracy * (1.0 - accuracy), 0.0) / images)


def score(history: Mapping[str, Sequence[float]], val_images: int | None = None) -> Score | None:
    """The score of a trial with per-epoch ``history``; None before its first epoch. Ties go
    to the earlier epoch (the same accuracy for less training). Without ``val_images`` (the
    size of the validation split) the retraining length is the best epoch."""
    curve = list(history.get(MONITOR, []))
    if not curve:
        return None
    best_index = max(range(len(curve)), key=lambda i: (curve[i], -i))
    best = float(curve[best_index])
    retrain_index = best_index
    if val_images:
        floor = best - standard_error(best, val_images)
        retrain_index = max(i for i, value in enumerate(curve) if value >= floor)
    return Score(
        best=best,
        best_epoch=best_index + 1,
        last=float(curve[-1]),
        retrain_epoch=retrain_index + 1,
    )
