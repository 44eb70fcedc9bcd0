"""Where a trial's time goes, per epoch: the wall seconds :func:`hpo.training.train` measures
and the trial record stores (``hpo.trials``), split into compiling, training and validating.
No backend import: status and timeline tools read it from a study's storage."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class EpochTimes:
    """Wall seconds of each epoch of a fit and of the validation pass inside it, kept by the
    caller (like ``history``) so that a pruned trial has them too.

    JAX and TensorFlow compile the train and validation steps during the first epoch, so
    :meth:`split` counts the first epoch's excess over the median later epoch as compiling
    (it also holds the first batch's other one-off costs). A fit of one epoch has nothing
    to compare with: its compile seconds are unknown (None)."""

    epoch: list[float] = field(default_factory=list)
    validation: list[float] = field(default_factory=list)

    def split(self) -> tuple[float | None, float, float]:
        """(compile, train, validate) seconds, summing to the epochs' wall time."""
        total, validate = sum(self.epoch), sum(self.validation)
        if len(self.epoch) < 2:
            return None, total - validate, validate
        compiling = max(0.0, self.epoch[0] - statistics.median(self.epoch[1:]))
        if len(self.validation) == len(self.epoch):  # the validation step's share of it
            first = self.validation[0] - statistics.median(self.validation[1:])
            validate -= min(max(0.0, first), compiling)
        return compiling, total - compiling - validate, validate
