"""How well does a trial's first epochs predict its score? The question every pruner and
successive-halving scheme bets on.

Reads the complete trials of unpruned bench studies (``hpo bench``'s storage, e.g. the
``random`` strategy) and prints, per epoch k, the rank correlation (Spearman) between the
best validation accuracy over epochs 1..k and the trial's score (its best over all epochs).
A pruner judging at epoch k is only as good as that correlation.

    python bench/bench_fidelity.py sqlite:///bench/results/catsdogs-cpu-32px-v4/bench.db
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import optuna
from rich.console import Console
from rich.table import Table
from scipy.stats import spearmanr

from hpo.score import MONITOR, best_so_far
from hpo.study.record import STRATEGY
from hpo.trials import history

REPO = Path(__file__).resolve().parent.parent


def curves(storages: list[str], strategy: str) -> list[list[float]]:
    """The validation curves of the complete trials of every study made with ``strategy``."""
    out = []
    for url in storages:
        for summary in optuna.get_all_study_summaries(url):
            if summary.user_attrs.get(STRATEGY) != strategy:  # as the study recorded it
                continue
            study = optuna.load_study(study_name=summary.study_name, storage=url)
            for trial in study.get_trials(
                deepcopy=False, states=[optuna.trial.TrialState.COMPLETE]
            ):
                out.append(list(history(trial).get(MONITOR, [])))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("storage", nargs="+", help="storage URLs of hpo bench runs")
    parser.add_argument("--strategy", default="random", help="an unpruned strategy's name")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/fidelity.json")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    rows = correlations(curves(args.storage, args.strategy))
    table = Table(title=f"score predicted from the first epochs ({args.strategy} trials)")
    for column in ("epoch k", "trials", "Spearman rho: best of epochs 1..k vs score"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(str(row["epoch"]), str(row["trials"]), f"{row['spearman']:.2f}")
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"storages": args.storage, "strategy": args.strategy, "rows": rows}, indent=2)
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
