"""Search strategies of the Optuna engine: one name, one sampler + pruner pair.

This is the one place that turns ``--strategy NAME`` into Optuna objects, so ``hpo run``,
``hpo worker`` and ``hpo bench`` mean the same thing by a name. Every pruner here reads the
trial's score curve (:mod:`hpo.score`: best validation accuracy so far), so pruned and
unpruned strategies are judged on the number the study ranks by.

- ``random``: uniform random sampling, no pruning; the baseline every tuner must beat.
- ``tpe-median``: hpo's behaviour before strategies existed: independent TPE with the
  space's ``[sampler] startup_trials`` random start-up trials and the pruner the space's
  ``[pruner]`` table names (median after ``warmup_epochs``, by default).
- ``tpe-hyperband``: the same TPE with Optuna's Hyperband pruner (brackets of successive
  halving from 1 epoch up to the trial's epochs).
- ``hpo`` (the default): its first trial is the space's default point
  (:meth:`hpo.space.SearchSpace.default_point`: each range's middle and first choice unless
  the file says otherwise; in the shipped catsdogs and animals10 spaces that is about
  Keras' own learning rate 1e-3 and batch 32), the configuration a notebook would start
  from, so a study has a sane model after its first trial instead of a random draw. Then
  multivariate TPE (it models learning rate and batch size jointly instead of one at a
  time) after only 3 start-up trials, and :class:`RungPruner` on the
  best-so-far curve at the ends of the first and second thirds of the epochs (never the
  first epoch alone): a trial more than one standard error below the median of every trial
  that reached that epoch stops. A budget buys more configurations when hopeless ones stop
  early, but early epochs rank trials poorly (``bench/bench_fidelity.py`` on 100 random
  trials of 9 epochs: Spearman 0.72 between a trial's best by epoch 3 and its score, 0.90
  by epoch 6), so the pruner only stops what noise cannot explain.
  A two-objective study (:mod:`hpo.study.objectives`) keeps the space's own start-up
  trials instead of 3: Optuna's multi-objective TPE puts ceil(n / 10) trials in its "good"
  set, so before 10 trials it models around a single trial, and at 64 px with 8-trial
  studies that lost to random search's front on 3 of 5 seeds (``docs/deployment-budgets.md``).
"""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Callable, Collection
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.errors import HpoError
from hpo.score import standard_error
from hpo.space import SearchSpace
from hpo.study.record import val_images

DEFAULT_STRATEGY = "hpo"

Pair = tuple[optuna.samplers.BaseSampler, optuna.pruners.BasePruner]


def _tpe(seed: int, startup: int, *, multivariate: bool = False) -> optuna.samplers.TPESampler:
    # TPE's constant liar treats other workers' running trials as bad results, so parallel
    # workers spread out instead of sampling next to each other.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=startup, constant_liar=True, multivariate=multivariate
        )


def space_pruner(space: SearchSpace) -> optuna.pruners.BasePruner:
    """The pruner the space's ``[pruner]`` table asks for."""
    config = space.pruner
    if config["kind"] == "none":
        return optuna.pruners.NopPruner()
    if config["kind"] == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=space.epochs)
    return optuna.pruners.MedianPruner(
        n_startup_trials=int(config["startup_trials"]), n_warmup_steps=int(config["warmup_epochs"])
    )


class RungPruner(optuna.pruners.BasePruner):
    """The default strategy's pruner. At the ``rungs`` (0-based epochs) it stops a trial
    whose best so far is more than ``margin_se`` standard errors below the median of every
    other trial's best so far at that epoch, once ``min_trials`` others have reached it.

    The standard error is an accuracy's on the study's validation split (its size is read
    from the study record; a bare Optuna study without one prunes at the median itself).

    Why not Optuna's ``MedianPruner``: it compares with the median of the *complete* trials
    only. Once pruning starts those are the survivors, so its bar is the median of the best
    trials, and it prunes whatever falls below it by any margin, noise included (the
    validation split's standard error is 0.014). Replayed over 10 unpruned random studies of
    9-epoch trials (``bench/bench_fidelity.py``), it would have killed the study's best trial
    in 5 of 10; rungs at epochs 3 and 6 with a one-standard-error margin kept it in 9 of 10."""

    def __init__(self, rungs: Collection[int], *, min_trials: int = 2, margin_se: float = 1.0):
        self.rungs = frozenset(rungs)
        self.min_trials = min_trials
        self.margin_se = margin_se
        self._val_images: dict[str, int | None] = {}  # study name -> validation images

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step not in self.rungs:
            return False
        others = [
            t.intermediate_values[step]
            for t in study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
            )
            if t.number != trial.number and step in t.intermediate_values
        ]
        if len(others) < self.min_trials:
            return False
        median = statistics.median(others)
        return trial.intermediate_values[step] < median - self.margin_se * self._error(
            study, median
        )

    def _error(self, study: optuna.Study, accuracy: float) -> float:
        if study.study_name not in self._val_images:
            self._val_images[study.study_name] = val_images(study)
        images = self._val_images[study.study_name]
        return standard_error(accuracy, images) if images else 0.0


def _random(space: SearchSpace, seed: int) -> Pair:
    return optuna.samplers.RandomSampler(seed=seed), optuna.pruners.NopPruner()


def _tpe_median(space: SearchSpace, seed: int) -> Pair:
    return _tpe(seed, int(space.sampler["startup_trials"])), space_pruner(space)


def _tpe_hyperband(space: SearchSpace, seed: int) -> Pair:
    return (
        _tpe(seed, int(space.sampler["startup_trials"])),
        optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=space.epochs, reduction_factor=3
        ),
    )


def hpo_rungs(epochs: int) -> frozenset[int]:
    """The epochs (0-based) at which the default strategy judges a trial: the ends of the
    first and second thirds of its epochs, never the first epoch alone nor the last."""
    return frozenset(k - 1 for k in (epochs // 3, 2 * epochs // 3) if 2 <= k < epochs)


def _hpo(space: SearchSpace, seed: int) -> Pair:
    # At an epoch budget a search sees few trials; TPE then models from the 4th, not the 11th.
    startup = min(3, int(space.sampler["startup_trials"]))
    return _tpe(seed, startup, multivariate=True), RungPruner(hpo_rungs(space.epochs))


# Strategies whose first trial is the space's default point rather than a sample.
STARTS_AT_DEFAULT = frozenset({"hpo"})

STRATEGIES: dict[str, Callable[[SearchSpace, int], Pair]] = {
    "hpo": _hpo,
    "random": _random,
    "tpe-median": _tpe_median,
    "tpe-hyperband": _tpe_hyperband,
}


def check_strategy(name: str) -> str:
    """``name`` if it is a strategy, else a one-line error listing the valid ones."""
    if name not in STRATEGIES:
        raise HpoError(f"unknown strategy '{name}' (valid: {', '.join(STRATEGIES)})")
    return name


def make_strategy(name: str, space: SearchSpace, seed: int, objectives: int = 1) -> Pair:
    """The seeded sampler and the pruner that strategy ``name`` searches ``space`` with,
    for a study of ``objectives`` objectives (two: no pruner, see
    :mod:`hpo.study.objectives`)."""
    sampler, pruner = STRATEGIES[check_strategy(name)](space, seed)
    if objectives == 1:
        return sampler, pruner
    if name == "hpo":  # see the module's docstring: no TPE around a single "good" trial
        sampler = _tpe(seed, int(space.sampler["startup_trials"]), multivariate=True)
    return sampler, optuna.pruners.NopPruner()


def queue_default_point(study: optuna.Study, name: str, space: SearchSpace) -> dict[str, Any]:
    """Queue the space's default point as the next trial of a new ``study`` when strategy
    ``name`` starts there; returns the point queued (empty when none was)."""
    if name not in STARTS_AT_DEFAULT:
        return {}
    point = space.default_point()
    study.enqueue_trial(point)
    return point
