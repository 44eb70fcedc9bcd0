"""How well does a trial's first epochs predict its score? The question every pruner and
successive-halving scheme bets on.

Reads the complete trials of unpruned bench studies (``hpo bench``'s storage, e.g. the
``random`` strategy) and prints, per epoch k, the rank correlation (Spearman) between the
best validation accuracy over epochs 1..k and the trial's score (its best over all epochs).
A pruner judging at epoch k is only as good as that correlation.

Then it replays each of those studies, its trials in the order they ran, through pruners
(Optuna's ``MedianPruner`` as hpo's default used it, and :class:`hpo.study.strategies.RungPruner`
at several rungs and margins): per pruner, the epochs the study would have spent, the best
score it would still have found, and in how many studies its best trial survived. A replay
cannot show what the saved epochs would have bought (more trials); it shows what a pruner
throws away on curves whose ends are known.

    python bench/bench_fidelity.py sqlite:///bench/results/catsdogs-cpu-32px-v4/bench.db
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table
from scipy.stats import spearmanr

from hpo.score import MONITOR, best_so_far
from hpo.study.record import SPLIT_SIZES, STRATEGY
from hpo.study.strategies import RungPruner
from hpo.trials import history

REPO = Path(__file__).resolve().parent.parent


def studies(storages: list[str], strategy: str) -> list[tuple[dict, list[list[float]]]]:
    """Per study made with ``strategy``: its split sizes and the validation curves of its
    complete trials, in the order they ran."""
    out = []
    for url in storages:
        for summary in optuna.get_all_study_summaries(url):
            if summary.user_attrs.get(STRATEGY) != strategy:  # as the study recorded it
                continue
            study = optuna.load_study(study_name=summary.study_name, storage=url)
            trials = study.get_trials(deepcopy=False, states=[TrialState.COMPLETE])
            out.append(
                (
                    summary.user_attrs.get(SPLIT_SIZES, {}),
                    [list(history(t).get(MONITOR, [])) for t in trials],
                )
            )
    return out


def correlations(trial_curves: list[list[float]]) -> list[dict[str, float]]:
    """Per epoch k: Spearman's rho of the best over epochs 1..k against the final score,
    over the trials that trained the most epochs (so every trial is judged at every k)."""
    epochs = max(len(c) for c in trial_curves)
    full = [best_so_far(c) for c in trial_curves if len(c) == epochs]
    rows = []
    for k in range(1, epochs + 1):
        rho = spearmanr([c[k - 1] for c in full], [c[-1] for c in full]).statistic
        rows.append({"epoch": k, "trials": len(full), "spearman": round(float(rho), 3)})
    return rows


def pruners(epochs: int) -> dict[str, Callable[[], optuna.pruners.BasePruner]]:
    """The pruners a replay compares, by label, for trials of ``epochs`` epochs."""
    third, two_thirds = max(epochs // 3, 2) - 1, max(2 * epochs // 3, 2) - 1  # 0-based
    late = [k for k in (third, two_thirds) if k < epochs - 1]
    return {
        "none": optuna.pruners.NopPruner,
        f"MedianPruner (completes only) from epoch {third + 1}": lambda: (
            optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=third)
        ),
        f"rung median at epoch {third + 1}, no margin": lambda: RungPruner({third}, margin_se=0),
        f"rung median at epoch {third + 1}, 1 SE": lambda: RungPruner({third}),
        "rung median at epochs " + "+".join(str(k + 1) for k in late) + ", 1 SE": lambda: (
            RungPruner(late)
        ),
        f"rung median at epoch {two_thirds + 1}, 1 SE": lambda: RungPruner({two_thirds}),
    }


def replay(
    split_sizes: dict, trial_curves: list[list[float]], pruner: optuna.pruners.BasePruner
) -> tuple[int, float, bool]:
    """Replay one study's curves through ``pruner``: (epochs spent, best score among the
    trials it let finish, whether the study's best trial was among them)."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    study.set_user_attr(SPLIT_SIZES, split_sizes)
    spent, best = 0, 0.0
    for raw in trial_curves:
        curve = best_so_far(raw)
        trial = study.ask()
        for step, value in enumerate(curve):
            trial.report(value, step=step)
            spent += 1
            if step < len(curve) - 1 and trial.should_prune():
                study.tell(trial, state=TrialState.PRUNED)
                break
        else:
            study.tell(trial, curve[-1])
            best = max(best, curve[-1])
    return spent, best, best >= max(max(c) for c in trial_curves)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("storage", nargs="+", help="storage URLs of hpo bench runs")
    parser.add_argument("--strategy", default="random", help="an unpruned strategy's name")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/fidelity.json")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    found = studies(args.storage, args.strategy)
    rows = correlations([c for _, group in found for c in group])
    table = Table(title=f"score predicted from the first epochs ({args.strategy} trials)")
    for column in ("epoch k", "trials", "Spearman rho: best of epochs 1..k vs score"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(str(row["epoch"]), str(row["trials"]), f"{row['spearman']:.2f}")
    Console().print(table)

    epochs = max(len(c) for _, group in found for c in group)
    kept = [(sizes, group) for sizes, group in found if all(len(c) == epochs for c in group)]
    table = Table(title=f"{len(kept)} {args.strategy} studies replayed through pruners")
    table.add_column("pruner", no_wrap=True)
    for column in ("epochs spent", "best score, median", "best trial kept"):
        table.add_column(column, justify="right")
    replays = []
    for label, make in pruners(epochs).items():
        runs = [replay(sizes, group, make()) for sizes, group in kept]
        row = {
            "pruner": label,
            "epochs_mean": round(statistics.mean(r[0] for r in runs), 1),
            "epochs_unpruned": statistics.mean(len(g) * epochs for _, g in kept),
            "best_median": round(statistics.median(r[1] for r in runs), 3),
            "best_kept": sum(r[2] for r in runs),
            "studies": len(runs),
        }
        replays.append(row)
        table.add_row(
            label,
            f"{row['epochs_mean']:.0f} of {row['epochs_unpruned']:.0f}",
            f"{row['best_median']:.3f}",
            f"{row['best_kept']} of {row['studies']}",
        )
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"storages": args.storage, "strategy": args.strategy, "rows": rows, "replays": replays},
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
