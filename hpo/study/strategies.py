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
  time) after only 3 start-up trials, and a median pruner on the best-so-far curve, after
  2 trials, from the end of the first third of the epochs but never on the first epoch
  alone: a budget buys more configurations when hopeless ones stop early, while one
  epoch's validation accuracy mostly says how fast a trial starts (``hpo bench``: the best
  of ten 3-epoch trials was fifth after its first epoch).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import optuna

from hpo.errors import HpoError
from hpo.space import SearchSpace

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


def _hpo(space: SearchSpace, seed: int) -> Pair:
    # At an epoch budget a search sees few trials; TPE then models from the 4th, not the 11th.
    startup = min(3, int(space.sampler["startup_trials"]))
    return (
        _tpe(seed, startup, multivariate=True),
        optuna.pruners.MedianPruner(
            n_startup_trials=2, n_warmup_steps=max(2, space.epochs // 3) - 1
        ),
    )


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


def make_strategy(name: str, space: SearchSpace, seed: int) -> Pair:
    """The seeded sampler and the pruner that strategy ``name`` searches ``space`` with."""
    return STRATEGIES[check_strategy(name)](space, seed)


def queue_default_point(study: optuna.Study, name: str, space: SearchSpace) -> dict[str, Any]:
    """Queue the space's default point as the next trial of a new ``study`` when strategy
    ``name`` starts there; returns the point queued (empty when none was)."""
    if name not in STARTS_AT_DEFAULT:
        return {}
    point = space.default_point()
    study.enqueue_trial(point)
    return point
