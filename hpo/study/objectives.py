"""What a study optimises. By default one objective, the validation accuracy of
:mod:`hpo.score`; ``--objectives accuracy,latency`` (or ``accuracy,params``) makes a
two-objective study whose trials are told (accuracy, cost) and whose result is a Pareto
front: the configurations no other beats on both.

Optuna does not prune multi-objective studies (``Trial.report`` refuses them), and hpo
adds no pruner of its own there: a configuration that learns slowly but runs fast can be
on the front, so stopping it by its accuracy alone, as the single-objective pruners do,
would cut exactly the cheap end of the front; comparing it only with trials of similar cost
needs more trials than an epoch budget buys. Each trial trains its full epochs instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.study import StudyDirection

from hpo.cost import Cost
from hpo.errors import HpoError

ACCURACY = "accuracy"
# name -> (direction, the metric name the dashboard shows)
OBJECTIVES = {
    ACCURACY: ("maximize", "val_accuracy"),
    "latency": ("minimize", "latency_ms"),
    "params": ("minimize", "params"),
}
DEFAULT = (ACCURACY,)


def parse_objectives(text: str) -> tuple[str, ...]:
    """``"accuracy,latency"`` -> the objectives; one-line errors for anything else."""
    names = tuple(name.strip() for name in text.split(","))
    for name in names:
        if name not in OBJECTIVES:
            raise HpoError(f"unknown objective '{name}' (valid: {', '.join(OBJECTIVES)})")
    if names[0] != ACCURACY or len(set(names)) != len(names) or len(names) > 2:
        raise HpoError(
            f"--objectives must be accuracy, or accuracy and one cost (accuracy,latency or "
            f"accuracy,params), got '{text}'"
        )
    return names


def directions(objectives: Sequence[str]) -> list[StudyDirection]:
    return [StudyDirection[OBJECTIVES[name][0].upper()] for name in objectives]


def metric_names(objectives: Sequence[str]) -> list[str]:
    return [OBJECTIVES[name][1] for name in objectives]


def values(objectives: Sequence[str], accuracy: float, cost: Cost) -> list[float]:
    """What a complete trial is told: its accuracy, then its cost in each other objective."""
    costs = {ACCURACY: accuracy, "latency": cost.latency_ms, "params": float(cost.params)}
    return [costs[name] for name in objectives]


def is_multi(study: optuna.Study) -> bool:
    return len(study.directions) > 1


def pareto_front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's Pareto-optimal complete trials, cheapest first."""
    return sorted(study.best_trials, key=lambda t: (t.values[1], -t.values[0]))
