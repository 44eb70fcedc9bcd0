"""Questions asked of a study's trials by the terminal output, status, export and bench:
how many are in each state, and which are best. Kept apart from :mod:`hpo.progress` (what
is printed) so that commands that print nothing can ask them."""

from __future__ import annotations

from collections.abc import Iterable

import optuna


def state_counts(trials: Iterable[optuna.trial.FrozenTrial]) -> dict[str, int]:
    """Trials per state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING), zeros included."""
    counts = {state.name: 0 for state in optuna.trial.TrialState}
    for trial in trials:
        counts[trial.state.name] += 1
    return counts


def best_trials(
    trials: Iterable[optuna.trial.FrozenTrial], top: int = 5
) -> list[optuna.trial.FrozenTrial]:
    """The ``top`` complete trials, highest validation accuracy first (hpo maximizes)."""
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    return sorted(complete, key=lambda t: t.value or 0.0, reverse=True)[:top]
