"""Strategies and the score definition, without training."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo import trials
from hpo.errors import HpoError
from hpo.score import best_so_far, score
from hpo.space import load_space
from hpo.storage import open_storage
from hpo.study.pruning import ScorePruning
from hpo.study.record import SPLIT_SIZES, choose_strategy, record_strategy
from hpo.study.setup import create_or_load_study
from hpo.study.strategies import (
    DEFAULT_STRATEGY,
    STRATEGIES,
    RungPruner,
    make_strategy,
    queue_default_point,
)


def test_each_strategy_is_a_seeded_sampler_and_a_pruner() -> None:
    space = load_space("demo", None)
    assert {"random", "tpe-median", "tpe-hyperband", DEFAULT_STRATEGY} <= set(STRATEGIES)
    sampler, pruner = make_strategy("random", space, 1)
    assert isinstance(sampler, optuna.samplers.RandomSampler)
    assert isinstance(pruner, optuna.pruners.NopPruner)
    assert isinstance(make_strategy("tpe-median", space, 1)[1], optuna.pruners.MedianPruner)
    assert isinstance(make_strategy("tpe-hyperband", space, 1)[1], optuna.pruners.HyperbandPruner)
    # the same seed samples the same first configuration
    firsts = []
    for _ in range(2):
        study = optuna.create_study(sampler=make_strategy(DEFAULT_STRATEGY, space, 7)[0])
        firsts.append(space.sample(study.ask()))
    assert firsts[0] == firsts[1]


def test_two_objectives_keep_the_spaces_start_up_and_never_prune() -> None:
    """Optuna's multi-objective TPE models around ceil(n / 10) "good" trials, a single one
    before 10: the default strategy then samples at random for the space's start-up."""
    space = load_space("catsdogs", None)
    single, _ = make_strategy(DEFAULT_STRATEGY, space, 0)
    double, pruner = make_strategy(DEFAULT_STRATEGY, space, 0, objectives=2)
    assert single._n_startup_trials == 3
    assert double._n_startup_trials == int(space.sampler["startup_trials"]) == 10
    assert isinstance(double, optuna.samplers.TPESampler) and double._multivariate
    assert isinstance(pruner, optuna.pruners.NopPruner)
    assert isinstance(
        make_strategy("tpe-median", space, 0, objectives=2)[1], optuna.pruners.NopPruner
    )


def test_the_default_strategy_starts_at_the_default_point(tmp_path: Path) -> None:
    space = load_space("catsdogs", None)
    rdb = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    hpo = create_or_load_study(rdb, "hpo", space=space, strategy=DEFAULT_STRATEGY)
    point = space.default_point()
    assert (point["learning_rate"], point["batch_size"]) == (0.00095, 32)  # about Keras' own
    # only the call that creates the study queues it: a second worker or a resume does not
    again = create_or_load_study(rdb, "hpo", space=space, strategy=DEFAULT_STRATEGY)
    assert [t.state for t in again.get_trials()] == [TrialState.WAITING]
    first = space.sample(again.ask())
    assert {k: first[k] for k in point} == point
    second = space.sample(hpo.ask())  # then the sampler takes over
    assert {k: second[k] for k in point} != point
    # other strategies start with a sample
    random = create_or_load_study(rdb, "random", space=space, strategy="random")
    assert random.get_trials() == [] and queue_default_point(random, "random", space) == {}


def test_hpo_prunes_from_the_second_epoch_and_never_after_the_last() -> None:
    space = load_space("demo", None).with_overrides(epochs=3)
    study = optuna.create_study(
        direction="maximize", pruner=make_strategy(DEFAULT_STRATEGY, space, 0)[1]
    )
    for _ in range(2):
        study.add_trial(
            optuna.trial.create_trial(value=0.9, intermediate_values={0: 0.9, 1: 0.9, 2: 0.9})
        )
    behind = ScorePruning(study.ask())
    behind.set_params({"epochs": 3})
    behind.on_epoch_end(0, {"val_accuracy": 0.1})  # one epoch says how fast it starts: kept
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 2"):
        behind.on_epoch_end(1, {"val_accuracy": 0.2})
    # a trial that has trained its last epoch is kept, whatever the pruner says: pruning it
    # would save nothing and throw its score away
    last = ScorePruning(study.ask())
    last.set_params({"epochs": 3})
    last.on_epoch_end(0, {"val_accuracy": 0.1})
    last.on_epoch_end(1, {"val_accuracy": 0.95})
    last.on_epoch_end(2, {"val_accuracy": 0.1})  # below the median now, and kept
    assert last.best == 0.95


def test_the_rung_pruner_judges_against_every_trial_and_spares_what_noise_explains() -> None:
    study = optuna.create_study(direction="maximize", pruner=RungPruner({2}))
    study.set_user_attr(SPLIT_SIZES, {"train": 4000, "val": 1000})  # SE at 0.62: 0.015
    curve = {0: 0.55, 1: 0.60}
    study.add_trial(  # the one survivor so far: Optuna's MedianPruner would compare with it
        optuna.trial.create_trial(value=0.74, intermediate_values={**curve, 2: 0.72, 8: 0.74})
    )
    for at_3 in (0.60, 0.62, 0.63):  # trials pruned at epoch 3 still set the rung's median
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.PRUNED, intermediate_values={**curve, 2: at_3}
            )
        )
    pruner = study.pruner
    assert _prunes(pruner, study, 0.60)  # below the median (0.625) by more than 1 SE
    assert not _prunes(pruner, study, 0.615)  # below it, within one standard error: kept
    # Optuna's MedianPruner compares with the survivor (0.72) and prunes it
    assert _prunes(optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=2), study, 0.615)
    assert not _prunes(pruner, study, 0.30, step=1)  # far behind, but epoch 2 is no rung


def _prunes(
    pruner: optuna.pruners.BasePruner, study: optuna.Study, value: float, step: int = 2
) -> bool:
    """Whether ``pruner`` prunes a new trial of ``study`` that reported ``value`` at ``step``
    (the trial then fails, so it does not count for the next question)."""
    trial = study.ask()
    trial.report(value, step=step)
    verdict = pruner.prune(study, study.trials[-1])
    study.tell(trial, state=TrialState.FAIL)
    return verdict


def test_unknown_strategy_lists_the_valid_ones() -> None:
    with pytest.raises(
        HpoError,
        match=r"^unknown strategy 'tpe' \(valid: hpo, random, tpe-median, "
        r"tpe-hyperband",
    ):
        make_strategy("tpe", load_space("demo", None), 0)


def test_a_study_keeps_its_strategy(tmp_path: Path) -> None:
    rdb = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    assert choose_strategy(rdb, "x", None, "hpo") == "hpo"  # new study: the default
    study = optuna.create_study(storage=rdb, study_name="x")
    record_strategy(study, "random")
    assert choose_strategy(rdb, "x", None, "hpo") == "random"  # resumed: the recorded one
    assert choose_strategy(rdb, "x", "random", "hpo") == "random"
    with pytest.raises(HpoError, match="made with strategy 'random', not 'tpe-median'"):
        choose_strategy(rdb, "x", "tpe-median", "hpo")
    legacy = optuna.create_study(storage=rdb, study_name="old")
    legacy.set_user_attr("hpo:data_fingerprint", "abc")  # recorded before strategies existed
    assert choose_strategy(rdb, "old", None, "hpo") == "tpe-median"


def test_score_is_the_best_epoch_and_records_the_last() -> None:
    history = {"val_accuracy": [0.60, 0.721, 0.70, 0.721, 0.612]}
    s = score(history)
    assert (s.best, s.best_epoch, s.last) == (0.721, 2, 0.612)  # ties: the earlier epoch
    assert score({}) is None

    # the trial record keeps both numbers; a continued fit counts only its own epochs
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    curves = {**history, "loss": [1.0] * 5}
    assert trials.record_end(trial, curves, initial_epoch=2, seconds=3.14159) == s
    [frozen] = study.get_trials()
    assert {k: frozen.user_attrs[k] for k in ("val_acc_best", "best_epoch", "val_acc_last")} == {
        "val_acc_best": 0.721,
        "best_epoch": 2,
        "val_acc_last": 0.612,
    }
    assert (trials.epochs_trained(frozen), frozen.user_attrs["seconds"]) == (3, 3.14)
    assert trials.history(frozen) == curves
    assert trials.retrain_epochs(frozen, default=9) == 2  # no split size: the best epoch
    assert best_so_far([0.5, 0.4, 0.6, 0.55]) == [0.5, 0.5, 0.6, 0.6]


def test_the_export_retrains_to_the_latest_epoch_the_split_cannot_tell_from_the_best() -> None:
    # one standard error of 0.70 on 1,000 images is 0.0145: epoch 4 (0.69) is within it,
    # epoch 5 (0.68) is not, so a retraining on train+val runs 4 epochs, not the best's 2
    history = {"val_accuracy": [0.60, 0.70, 0.66, 0.69, 0.68]}
    assert score(history, val_images=1000).retrain_epoch == 4
    assert score(history, val_images=1000).best_epoch == 2  # the score itself is unchanged
    # a split large enough to tell 0.69 from 0.70 keeps the best epoch
    assert score(history, val_images=100_000).retrain_epoch == 2
    assert score(history).retrain_epoch == 2  # split size unknown: the best epoch

    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    trials.record_end(
        trial, {**history, "loss": [1.0] * 5}, initial_epoch=0, seconds=1.0, val_images=1000
    )
    study.tell(trial, 0.70)
    [frozen] = study.get_trials()
    assert (frozen.user_attrs["best_epoch"], frozen.user_attrs["retrain_epochs"]) == (2, 4)
    assert trials.retrain_epochs(frozen, default=9) == 4
