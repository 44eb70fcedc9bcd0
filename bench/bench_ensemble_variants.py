"""Which ensembles of a bench study beat its single winner, at equal total epochs.

    python bench/bench_ensemble_variants.py --out-dir bench/results/catsdogs-cpu-32px-9ep-ensemble \\
        [--data-dir ../shared/data/cats_and_dogs_small] [--strategy hpo]

Reads the studies of an ``hpo bench ... --ensemble K`` run (``OUT_DIR/bench.db``, its
artifact store ``OUT_DIR/artifacts``) and, for each seed, tests ensembles other than the
bench's greedy one, each at the bench's equal total epochs
(:func:`hpo.bench_ensemble.equal_epochs_prefix`: search a prefix of the study, so that search
plus the members' retraining fit within the single winner's search plus retraining):

- ``top3-average``: the prefix's 3 best trials, equal weights (the issue's first probe);
- ``greedy3+pruned``: greedy selection of 3 steps with pruned trials' validation
  probabilities among the candidates (each member retrained for its own retraining length);
- ``seeds3``: the prefix's winner retrained with 3 seeds (its own, +1, +2), equal weights;
- ``greedy3-extra-epochs``: greedy selection of 3 steps from the *whole* study, its members'
  retraining on top of the single winner's budget (not at equal epochs: it says whether
  ensembling helps at all here, or only loses the search epochs it costs).

Members are retrained with the export's code (:func:`hpo.export.retrain_trial`) and their test
probabilities kept on the study, so reruns only read them. Writes ``variants.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.bench import WINNER_ATTR
from hpo.bench_ensemble import ENSEMBLE_ATTR, equal_epochs_prefix, member_test_probs
from hpo.data import Dataset
from hpo.ensemble import select
from hpo.export import study_data
from hpo.predictions import stored_probabilities, validation_rows
from hpo.progress import Reporter
from hpo.study.record import recorded_space, study_record
from hpo.trials import SEED, VAL_ACC_BEST, epochs_trained, retrain_epochs

SEED_STEP = 1  # the seed ensemble's seeds: the trial's, then +1, +2


def variants(
    study: optuna.Study, data: Dataset, artifacts: Path, reporter: Reporter
) -> dict[str, Any]:
    """Each variant's members, epochs and test accuracy for one bench study."""
    finished = sorted(
        (t for t in study.get_trials(deepcopy=False) if t.state.is_finished()),
        key=lambda t: t.number,
    )
    winner = study.user_attrs[WINNER_ATTR]
    budget = sum(epochs_trained(t) for t in finished) + int(winner["epochs"])
    default = recorded_space(study.study_name, study_record(study)).epochs
    val_labels = data.labels[validation_rows(data.split("val"))]
    test_labels = data.labels[np.sort(data.split("test").rows)]
    probs = {
        t.number: p
        for t in finished
        if (p := stored_probabilities(t, study._storage, artifacts)) is not None
    }

    def ranked(prefix: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        complete = [t for t in prefix if t.state == TrialState.COMPLETE]
        return sorted(complete, key=lambda t: -(t.value or 0.0))

    def top3(prefix: Sequence[FrozenTrial]) -> tuple[list[tuple[FrozenTrial, int | None]], int]:
        members = ranked(prefix)[:3]
        return [(t, None) for t in members], sum(retrain_epochs(t, default) for t in members)

    def greedy_pruned(
        prefix: Sequence[FrozenTrial],
    ) -> tuple[list[tuple[FrozenTrial, int | None]], int] | None:
        pool = [t for t in prefix if t.number in probs and t.state != TrialState.FAIL]
        pool.sort(key=lambda t: -float(t.user_attrs.get(VAL_ACC_BEST) or 0.0))
        if not pool:
            return None
        chosen = select([probs[t.number] for t in pool], val_labels, 3)
        members = [pool[i] for i in chosen.picks]  # repeats kept: weight = count
        distinct = {t.number: t for t in members}
        return [(t, None) for t in members], sum(
            retrain_epochs(t, default) for t in distinct.values()
        )

    def greedy_whole(
        prefix: Sequence[FrozenTrial],
    ) -> tuple[list[tuple[FrozenTrial, int | None]], int] | None:
        pool = [t for t in ranked(prefix) if t.number in probs]
        if not pool:
            return None
        chosen = select([probs[t.number] for t in pool], val_labels, 3)
        members = [pool[i] for i in chosen.picks]
        distinct = {t.number: t for t in members}
        return [(t, None) for t in members], sum(
            retrain_epochs(t, default) for t in distinct.values()
        )

    def seeds3(prefix: Sequence[FrozenTrial]) -> tuple[list[tuple[FrozenTrial, int | None]], int]:
        best = ranked(prefix)[0]
        own = int(best.user_attrs[SEED])
        members = [(best, None), (best, own + SEED_STEP), (best, own + 2 * SEED_STEP)]
        return members, 3 * retrain_epochs(best, default)

    found: dict[str, Any] = {
        "study": study.study_name,
        "single": {"test_accuracy": winner["test_accuracy"], "total_epochs": budget},
    }
    for size in ("3", "auto"):
        stored = study.user_attrs.get(ENSEMBLE_ATTR.format(size=size))
        if stored:
            found[f"greedy{size}"] = stored
    plans = (
        ("top3-average", top3, budget),
        ("greedy3+pruned", greedy_pruned, budget),
        ("seeds3", seeds3, budget),
        ("greedy3-extra-epochs", greedy_whole, sys.maxsize),  # no limit: the whole study
    )
    for name, plan, limit in plans:
        planned = equal_epochs_prefix(finished, limit, plan)
        if planned is None:
            continue
        cut, members, search, retrain = planned
        tested = [member_test_probs(study, t, data, reporter, seed) for t, seed in members]
        mixed = np.mean(tested, axis=0)
        found[name] = {
            "members": [[t.number, seed] for t, seed in members],
            "prefix_trials": cut,
            "search_epochs": search,
            "retrain_epochs": retrain,
            "total_epochs": search + retrain,
            "member_test_accuracy": [float((p.argmax(1) == test_labels).mean()) for p in tested],
            "test_accuracy": float((mixed.argmax(1) == test_labels).mean()),
        }
        reporter.message(f"{study.study_name} {name}: {found[name]['test_accuracy']:.3f}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--data-dir", default="../shared/data/cats_and_dogs_small")
    parser.add_argument("--strategy", default="hpo")
    args = parser.parse_args()
    storage = f"sqlite:///{(args.out_dir / 'bench.db').absolute()}"
    names = sorted(
        s.study_name
        for s in optuna.get_all_study_summaries(storage)
        if s.study_name.startswith("bench-") and f"-{args.strategy}-s" in s.study_name
    )
    reporter = Reporter()
    rows = []
    for name in names:
        study = optuna.load_study(study_name=name, storage=storage)
        if WINNER_ATTR not in study.user_attrs:
            continue
        data = study_data(study, args.data_dir, reporter)
        rows.append(variants(study, data, args.out_dir / "artifacts", reporter))
        (args.out_dir / "variants.json").write_text(json.dumps(rows, indent=2) + "\n")
    names_seen = {k for row in rows for k in row if k not in ("study", "single")}
    for variant in sorted(names_seen):
        gains = [
            row[variant]["test_accuracy"] - row["single"]["test_accuracy"]
            for row in rows
            if variant in row
        ]
        print(
            f"{variant}: median gain {statistics.median(gains):+.3f} over {len(gains)} seeds "
            f"({', '.join(f'{g:+.3f}' for g in gains)})"
        )


if __name__ == "__main__":
    main()
