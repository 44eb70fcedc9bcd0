"""``hpo bench --ensemble K``: each seed's study exported as an ensemble too, at the same
total epochs as its single winner.

**Equal total epochs.** The single winner costs the study's search epochs plus its
retraining; an ensemble retrains every member, so it must search less. Its search is the
longest *prefix* of the study's trials (by trial number) for which search epochs plus the
retraining epochs of the members selected from that prefix fit within the single winner's
total. A bench study is run by one worker with a seeded sampler, so a prefix is exactly the
study that the smaller budget would have produced. Selection and member retraining are the
export's (:func:`hpo.ensemble.select`, :func:`hpo.export.retrain_trial`).

**Test numbers.** Each retrained member's test probabilities are stored on the study (float16,
base64), so a resumed bench, or another ensemble size, never retrains a member twice; the
ensemble's test accuracy is read from their weighted average, which is what the one-file
model of ``hpo export-best --ensemble`` outputs (tests/test_ensemble.py checks that).
"""

from __future__ import annotations

import base64
import statistics
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from hpo.data import Dataset
from hpo.ensemble import EnsembleRequest, Selection, select
from hpo.progress import Reporter
from hpo.trials import epochs_trained, retrain_epochs

if TYPE_CHECKING:
    from hpo.export import RetrainedTrial

ENSEMBLE_ATTR = "bench:ensemble_test:{size}"  # one per ensemble size, set once
# a retrained member's test probabilities (retrained with another seed than the trial's:
# with ":seed<N>" appended)
TEST_PROBS_ATTR = "bench:test_probs:{trial}"


def ensemble_test(
    study: optuna.Study,
    request: EnsembleRequest,
    single_epochs: int,
    *,
    data_dir: str | None,
    artifacts: str | None,
    reporter: Reporter,
) -> dict[str, Any] | None:
    """The ensemble arm of ``study`` at the total epochs of its single winner (search plus
    ``single_epochs`` of retraining), stored on the study; None when the study kept no
    validation predictions."""
    from hpo.export import ensemble_candidates, study_data
    from hpo.predictions import validation_rows
    from hpo.study.record import recorded_space, study_record

    key = ENSEMBLE_ATTR.format(size=request.describe())
    stored = study.user_attrs.get(key)
    if stored is not None:  # one read: each copies every attribute, probabilities included
        return dict(stored)
    candidates = dict(
        (trial.number, (trial, probs))
        for trial, probs in ensemble_candidates(study, EnsembleRequest(None), artifacts)
    )
    if not candidates:
        return None
    finished = sorted(
        (t for t in study.get_trials(deepcopy=False) if t.state.is_finished()),
        key=lambda t: t.number,
    )
    budget = sum(epochs_trained(t) for t in finished) + single_epochs
    data = study_data(study, data_dir, reporter)
    labels = data.labels[validation_rows(data.split("val"))]
    default = recorded_space(study.study_name, study_record(study)).epochs

    def plan(
        prefix: Sequence[FrozenTrial],
    ) -> tuple[tuple[Selection, list[FrozenTrial]], int] | None:
        numbers = {t.number for t in prefix}  # candidates come best first
        pool = [pair for number, pair in candidates.items() if number in numbers]
        if not pool:
            return None
        size = None if request.size is None else min(request.size, len(pool))
        selection = select([probs for _, probs in pool], labels, size)
        members = [pool[i][0] for i in selection.members]
        return (selection, members), sum(retrain_epochs(t, default) for t in members)

    found = equal_epochs_prefix(finished, budget, plan)
    if found is None:
        return None
    cut, (selection, members), search, retrain = found
    result = _tested(study, members, selection, data, reporter)
    result.update(
        size=request.describe(),
        search_epochs=search,
        retrain_epochs=retrain,
        total_epochs=search + retrain,
        single_total_epochs=budget,
        prefix_trials=cut,
    )
    study.set_user_attr(key, result)
    reporter.message(
        f"ensemble ({request.describe()}) of trials {result['members']}: test "
        f"{result['test_accuracy']:.3f} (search {search} + retraining {retrain} epochs, "
        f"single winner {budget})"
    )
    return result


Plan = TypeVar("Plan")


def equal_epochs_prefix(
    finished: Sequence[FrozenTrial],
    budget: int,
    plan: Callable[[Sequence[FrozenTrial]], tuple[Plan, int] | None],
) -> tuple[int, Plan, int, int] | None:
    """The longest prefix of ``finished`` (by trial number) whose search epochs plus the
    retraining epochs of what ``plan`` makes of it fit within ``budget``: (trials in the
    prefix, the plan, search epochs, retraining epochs); None if not even one trial fits."""
    for cut in range(len(finished), 0, -1):
        planned = plan(finished[:cut])
        if planned is None:
            continue
        search = sum(epochs_trained(t) for t in finished[:cut])
        if search + planned[1] <= budget:
            return cut, planned[0], search, planned[1]
    return None


def _tested(
    study: optuna.Study,
    members: Sequence[FrozenTrial],
    selection: Selection,
    data: Dataset,
    reporter: Reporter,
) -> dict[str, Any]:
    """Each member retrained (or read back) and the weighted average's test accuracy."""
    test = data.split("test")
    labels = data.labels[np.sort(test.rows)]
    probs = [member_test_probs(study, trial, data, reporter) for trial in members]
    mixed = sum(w * p for w, p in zip(selection.weights, probs, strict=True))
    return {
        "members": [t.number for t in members],
        "weights": selection.weights,
        "step_val_accuracy": list(selection.step_accuracy),
        "member_test_accuracy": [float((p.argmax(1) == labels).mean()) for p in probs],
        "test_accuracy": float((np.asarray(mixed).argmax(1) == labels).mean()),
    }


def member_test_probs(
    study: optuna.Study,
    trial: FrozenTrial,
    data: Dataset,
    reporter: Reporter,
    seed: int | None = None,
) -> np.ndarray:
    """``trial`` retrained like an export (with ``seed`` instead of its own, if given) and
    its test probabilities (sorted test rows), stored on the study the first time."""
    from hpo.export import retrain_trial

    stored = study.user_attrs.get(_probs_key(trial.number, seed))
    if stored is not None:
        return decode(stored)
    done = retrain_trial(study, trial, data=data, reporter=reporter, seed=seed)
    return store_test_probs(study, done, seed)


def store_test_probs(
    study: optuna.Study, done: RetrainedTrial, seed: int | None = None
) -> np.ndarray:
    """Keep a retrained trial's test probabilities on the study (the bench's single winner
    too, so that the ensemble arm does not retrain it again)."""
    probs = done.retrained.test_probs
    study.set_user_attr(_probs_key(done.trial.number, seed), encode(probs))
    return probs


def _probs_key(trial: int, seed: int | None) -> str:
    key = TEST_PROBS_ATTR.format(trial=trial)
    return key if seed is None else f"{key}:seed{seed}"


def encode(probs: np.ndarray) -> dict[str, Any]:
    array = np.asarray(probs, dtype="float16")
    return {"shape": list(array.shape), "float16": base64.b64encode(array.tobytes()).decode()}


def decode(stored: dict[str, Any]) -> np.ndarray:
    raw = np.frombuffer(base64.b64decode(stored["float16"]), dtype="float16")
    return raw.reshape(stored["shape"]).astype("float32")


def ensemble_summary(runs: Sequence[dict[str, Any]], resamples: int = 2000) -> dict[str, Any]:
    """Over seeds: the ensemble's median test accuracy, the median paired gain over the
    single winner and a 90% bootstrap interval of that median (seeds drawn with
    replacement, fixed RNG seed), and the median search and retraining epochs of both."""
    paired = [r for r in runs if r.get("ensemble") and r.get("test_accuracy") is not None]
    pairs = [(r["ensemble"]["test_accuracy"], r["test_accuracy"]) for r in paired]
    if not pairs:
        return {}
    gains = np.array([ens - single for ens, single in pairs])
    rng = np.random.default_rng(0)
    medians = [
        float(np.median(gains[rng.integers(len(gains), size=len(gains))])) for _ in range(resamples)
    ]
    return {
        "ensemble_test_median": statistics.median(ens for ens, _ in pairs),
        "ensemble_gain_median": float(np.median(gains)),
        "ensemble_gain_interval": [
            float(np.quantile(medians, 0.05)),
            float(np.quantile(medians, 0.95)),
        ],
        "ensemble_seeds": len(pairs),
        # what each export trained, search + retraining (medians over the same seeds)
        "epochs_single": [
            statistics.median(r["epochs_used"] for r in paired),
            statistics.median(r["winner"]["epochs"] for r in paired),
        ],
        "epochs_ensemble": [
            statistics.median(r["ensemble"]["search_epochs"] for r in paired),
            statistics.median(r["ensemble"]["retrain_epochs"] for r in paired),
        ],
    }


GOAL_POINTS = 0.02  # issue 33: the default's ensemble this far above other strategies' winners


def ensemble_goal(per: dict[str, dict[str, Any]], default: str) -> dict[str, Any]:
    """Issue 33's goal: the default strategy's ensemble above its own winner (median paired
    gain with a bootstrap interval that excludes 0) and at least 2 points above every other
    strategy's single-winner median."""
    mine = per.get(default, {})
    if "ensemble_test_median" not in mine:
        return {}
    low, _ = mine["ensemble_gain_interval"]
    margins = {
        other: mine["ensemble_test_median"] - row["test_median"]
        for other, row in per.items()
        if other != default and row.get("test_median") is not None
    }
    return {
        "gain_over_own_winner": mine["ensemble_gain_median"],
        "interval_excludes_0": low > 0,
        "margin_over_other_winners": margins,
        "met": low > 0 and all(m >= GOAL_POINTS for m in margins.values()),
    }


def goal_line(verdict: dict[str, Any]) -> str:
    margins = ", ".join(
        f"{other} {margin:+.3f}" for other, margin in verdict["margin_over_other_winners"].items()
    )
    return (
        f"ensemble goal: gain over its own winner {verdict['gain_over_own_winner']:+.3f} "
        f"(interval {'excludes' if verdict['interval_excludes_0'] else 'includes'} 0)"
        + (
            f", over other winners' medians: {margins} (goal >= +{GOAL_POINTS:.2f})"
            if margins
            else ""
        )
        + f": {'met' if verdict['met'] else 'not met'}"
    )
