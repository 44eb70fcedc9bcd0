"""The Keras callback that feeds a trial's score curve to the Optuna pruner.

It replaces optuna-integration's ``KerasPruningCallback``, which reports the raw
validation accuracy of each epoch: the pruner would then judge a trial on one noisy epoch
while the study ranks it by its best (:mod:`hpo.score`). Reporting the best so far makes the
pruner compare the number the trial would be ranked by.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import keras
import optuna

from hpo.score import MONITOR


class ScorePruning(keras.callbacks.Callback):
    """After each epoch: report the best validation accuracy so far, prune if told to
    (never after the fit's last epoch, whose trial has already cost all it will)."""

    def __init__(self, trial: optuna.Trial) -> None:
        super().__init__()
        self.trial = trial
        self.best: float | None = None

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        value = (logs or {}).get(MONITOR)
        if value is None:
            return
        self.best = float(value) if self.best is None else max(self.best, float(value))
        self.trial.report(self.best, step=epoch)
        if epoch + 1 >= self.params.get("epochs", math.inf):
            return  # the trial is done: pruning it now would only throw its score away
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch + 1}")
