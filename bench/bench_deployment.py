"""Searching under an inference budget, and accuracy against latency, on catsdogs.

    python bench/bench_deployment.py --data-dir ../shared/data/cats_and_dogs_small \\
        [--image-size 32] [--epochs 2] [--budget-epochs 16] [--seeds 0 1] [--samples 40] \\
        [--out bench/results/deployment-32px]

1. **The space's latencies.** ``--samples`` configurations drawn at random from the catsdogs
   space are costed with :func:`hpo.cost.measure_cost` (ONNX Runtime, batch 1, one thread);
   the latency budget ``L`` is their 25th percentile.
2. **Per search seed**, four studies at the same epoch budget (``--budget-epochs`` epochs in
   total, ``--epochs`` per trial), all with hpo's default strategy unless named:
   ``free`` (no budget), ``budget`` (``--max-latency-ms L``), ``pareto``
   (``--objectives accuracy,latency``, with ``--pareto-strategy``) and ``random`` (random search, its trials' Pareto
   front taken afterwards). The winners of ``free`` and ``budget`` are retrained on
   train+val and tested once (the export's code, :func:`hpo.export.retrain_trial`).
3. **Goals** (median over seeds): ``budget``'s winner tests within 2 points of ``free``'s
   while running at least 2x faster; no epoch trained on an over-budget configuration;
   ``pareto``'s front has at least the hypervolume of ``random``'s filtered front.
   Hypervolume is over (validation accuracy, latency ms), accuracy maximised, latency
   minimised, from the reference point (0.5 = chance for two classes, the largest latency
   sampled in step 1).

Writes ``OUT.json`` (every number) and ``OUT.md`` (the table), or ``OUT-STRATEGY.json``
and ``.md`` with ``--pareto-strategy STRATEGY`` (the other studies are shared: same
database ``OUT.db``, same names).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing hpo

ACCURACY_GOAL = 0.02  # points (as a fraction) the budgeted winner may lose
SPEEDUP_GOAL = 2.0


def hypervolume(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by (accuracy, latency) points, accuracy up, latency down, bounded by
    ``reference`` (accuracy floor, latency ceiling)."""
    floor, ceiling = reference
    useful = sorted((lat, acc) for acc, lat in points if acc > floor and lat < ceiling)
    area, best = 0.0, floor
    for i, (lat, acc) in enumerate(useful):  # sweep by latency; each step adds its stripe
        best = max(best, acc)
        right = useful[i + 1][0] if i + 1 < len(useful) else ceiling
        area += (right - lat) * (best - floor)
    return area


def space_latencies(space: Any, samples: int, seed: int) -> list[float]:
    import optuna

    from hpo.cost import measure_cost

    sampler = optuna.samplers.RandomSampler(seed=seed)
    study = optuna.create_study(sampler=sampler)
    latencies = []
    for _ in range(samples):
        trial = study.ask()
        latencies.append(measure_cost(space.sample(trial), 2, space.image_size).latency_ms)
        study.tell(trial, 0.0)
    return latencies


WINNER_ATTR = "bench:deployment_winner"  # a study's winner, retrained and tested once


def winner(study: Any, data_dir: str) -> dict[str, Any]:
    """The study's best trial retrained on train+val and tested once; stored on the study,
    so a bench run again with more seeds does not retrain (and re-draw) it."""
    from hpo.export import retrain_trial
    from hpo.trials import LATENCY_MS, best_trials

    if WINNER_ATTR in study.user_attrs:
        return dict(study.user_attrs[WINNER_ATTR])
    (best,) = best_trials(study.get_trials(deepcopy=False), top=1)
    done = retrain_trial(study, best, data_dir=data_dir)
    result = {
        "trial": best.number,
        "val_accuracy": best.value,
        "test_accuracy": done.report["accuracy"],
        "latency_ms": best.user_attrs[LATENCY_MS],
        "params": best.params,
    }
    study.set_user_attr(WINNER_ATTR, result)
    return result


def front(study: Any) -> list[tuple[float, float]]:
    """(accuracy, latency) of the study's complete trials that no other beats on both."""
    from optuna.trial import TrialState

    from hpo.trials import LATENCY_MS, accuracy

    points = [
        (accuracy(t) or 0.0, float(t.user_attrs[LATENCY_MS]))
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ]
    return sorted(
        p for p in points if not any(q[0] >= p[0] and q[1] <= p[1] and q != p for q in points)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--budget-epochs", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--out", default="bench/results/deployment-32px")
    parser.add_argument(
        "--pareto-strategy",
        default="hpo",
        help="the two-objective study's strategy (a variant's studies get its name)",
    )
    parser.add_argument(
        "--pareto-label",
        help="name the two-objective studies and results by this instead (a code change)",
    )
    args = parser.parse_args()

    from hpo.cost import Budget
    from hpo.device import load_backend
    from hpo.space import load_space
    from hpo.study import run_study
    from hpo.study.isolate import load_and_freeze_backend
    from hpo.trials import EPOCHS_TRAINED, OVER_BUDGET

    backend = load_backend()
    load_and_freeze_backend()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{out.with_suffix('.db').absolute()}"
    space = load_space("catsdogs", None).with_overrides(
        epochs=args.epochs, image_size=args.image_size
    )
    started = time.monotonic()
    latencies = space_latencies(space, args.samples, seed=1234)
    limit = round(statistics.quantiles(latencies, n=4)[0], 4)
    reference = (0.5, max(latencies))
    print(
        f"{args.samples} sampled latencies: min {min(latencies):.3g} median "
        f"{statistics.median(latencies):.3g} max {max(latencies):.3g} ms; L = p25 = {limit} ms"
    )

    runs: dict[str, dict[int, Any]] = {k: {} for k in ("free", "budget", "pareto", "random")}
    label = args.pareto_label or ("" if args.pareto_strategy == "hpo" else args.pareto_strategy)
    variant = f"-{label}" if label else ""
    for seed in args.seeds:
        settings = {
            "free": {},
            "budget": {"budget": Budget(max_latency_ms=limit)},
            "pareto": {"objectives": "accuracy,latency", "strategy": args.pareto_strategy},
            "random": {"strategy": "random"},
        }
        for name, extra in settings.items():
            t0 = time.monotonic()
            study = run_study(
                "catsdogs",
                n_trials=None,
                budget_epochs=args.budget_epochs,
                storage=storage,
                study_name=f"deploy-{name}{variant if name == 'pareto' else ''}-s{seed}",
                data_dir=args.data_dir,
                epochs=args.epochs,
                image_size=args.image_size,
                seed=seed,
                **extra,
            )
            trials = study.get_trials(deepcopy=False)
            over = [t for t in trials if t.user_attrs.get(OVER_BUDGET)]
            record: dict[str, Any] = {
                "trials": len(trials),
                "over_budget": len(over),
                "epochs_on_over_budget": sum(
                    int(t.user_attrs.get(EPOCHS_TRAINED, 0)) for t in over
                ),
                "front": front(study),
            }
            record["hypervolume"] = hypervolume(record["front"], reference)
            if name in ("free", "budget"):
                record["winner"] = winner(study, args.data_dir)
            record["seconds"] = round(time.monotonic() - t0, 1)
            runs[name][seed] = record
            print(
                f"seed {seed} {name}: {json.dumps({k: v for k, v in record.items() if k != 'front'})}"
            )

    med = statistics.median
    free_acc = med(runs["free"][s]["winner"]["test_accuracy"] for s in args.seeds)
    budget_acc = med(runs["budget"][s]["winner"]["test_accuracy"] for s in args.seeds)
    speedups = [
        runs["free"][s]["winner"]["latency_ms"] / runs["budget"][s]["winner"]["latency_ms"]
        for s in args.seeds
    ]
    hv = {
        name: med(runs[name][s]["hypervolume"] for s in args.seeds) for name in ("pareto", "random")
    }
    goals = {
        "budget_within_2_points": budget_acc >= free_acc - ACCURACY_GOAL,
        "budget_2x_faster": med(speedups) >= SPEEDUP_GOAL,
        "no_epoch_over_budget": all(
            runs["budget"][s]["epochs_on_over_budget"] == 0 for s in args.seeds
        ),
        "pareto_hv_at_least_random": hv["pareto"] >= hv["random"],
    }
    result = {
        "command": " ".join(["python", *sys.argv]),
        "machine": f"{platform.machine()}, {platform.node()}",
        "backend": backend,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": vars(args),
        "sampled_latencies_ms": latencies,
        "latency_budget_ms": limit,
        "hypervolume_reference": reference,
        "runs": runs,
        "median_test_accuracy": {"free": free_acc, "budget": budget_acc},
        "speedups": speedups,
        "median_hypervolume": hv,
        "goals": goals,
        "seconds": round(time.monotonic() - started),
    }
    # a variant's results beside the main ones; its studies share the database
    results = out.with_name(out.name + variant)
    results.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    rows = [
        "| seed | free: test acc | free: ms | budget: test acc | budget: ms | speedup | "
        "over budget (epochs) | HV pareto | HV random |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, s in enumerate(args.seeds):
        f, b = runs["free"][s]["winner"], runs["budget"][s]["winner"]
        rows.append(
            f"| {s} | {f['test_accuracy']:.3f} | {f['latency_ms']:.3g} | {b['test_accuracy']:.3f} | "
            f"{b['latency_ms']:.3g} | {speedups[i]:.2f}x | {runs['budget'][s]['over_budget']} "
            f"({runs['budget'][s]['epochs_on_over_budget']}) | {runs['pareto'][s]['hypervolume']:.4f} | "
            f"{runs['random'][s]['hypervolume']:.4f} |"
        )
    rows.append(
        f"| median | {free_acc:.3f} | | {budget_acc:.3f} | | {med(speedups):.2f}x | | "
        f"{hv['pareto']:.4f} | {hv['random']:.4f} |"
    )
    table = "\n".join(rows)
    summary = (
        f"{table}\n\nL = {limit} ms (p25 of {args.samples} sampled configurations: min "
        f"{min(latencies):.3g}, median {statistics.median(latencies):.3g}, max {max(latencies):.3g} ms); "
        f"hypervolume reference (accuracy {reference[0]}, latency {reference[1]:.3g} ms); "
        f"goals: {goals}\n"
    )
    results.with_suffix(".md").write_text(summary)
    print(summary)


if __name__ == "__main__":
    main()
