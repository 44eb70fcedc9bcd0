"""What mirroring trials to MLflow costs per trial, as a share of the trial's own time.

    python bench/bench_mlflow.py [--trials 6] [--epochs 2] [--image-size 32] [--seed 0]

Runs one demo study per tracking target, in this process, with an
:class:`hpo.mlflow_mirror.MlflowMirror` observer: a real ``mlflow server`` started on
127.0.0.1 (SQLite backend store, temporary artifact root; bench/mlflow_server.py) and a
local ``sqlite:`` tracking URI. Per trial it times the mirror's call (parent lookup, run,
learning-curve PNG, metrics, state) against the trial's training time (user attr
``seconds``). The first trial also finds or creates the experiment and the parent run; it is
reported apart from the others. One-time costs (importing MLflow, opening the client) are
listed separately. Writes bench/results/mlflow.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing hpo


def measure(uri: str, folder: Path, args: argparse.Namespace) -> dict:
    import optuna

    from hpo.mlflow_mirror import MlflowMirror
    from hpo.study import run_study

    folder.mkdir(parents=True, exist_ok=True)
    mirror = MlflowMirror(uri, "bench", artifacts=folder / "art")
    per_trial: dict[int, float] = {}
    spent = [0.0]

    def after_mirror(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        per_trial[trial.number] = mirror.seconds - spent[0]
        spent[0] = mirror.seconds

    study = run_study(
        "demo",
        n_trials=args.trials,
        epochs=args.epochs,
        image_size=args.image_size,
        seed=args.seed,
        storage=f"sqlite:///{folder / 's.db'}",
        study_name="bench",
        artifacts=folder / "art",
        observers=[mirror, after_mirror],
    )
    mirror.close()
    rows = [
        {
            "trial": t.number,
            "state": t.state.name,
            "trial_s": t.user_attrs["seconds"],
            "mirror_s": round(per_trial[t.number], 4),
            "share_pct": round(
                100 * per_trial[t.number] / (t.user_attrs["seconds"] + per_trial[t.number]), 3
            ),
        }
        for t in study.trials
    ]
    later = rows[1:]
    return {
        "uri": uri.split("://")[0],
        "trials": rows,
        "first_trial_mirror_s": rows[0]["mirror_s"],
        "later_mirror_s_median": statistics.median(r["mirror_s"] for r in later),
        "later_share_pct_median": statistics.median(r["share_pct"] for r in later),
        "later_share_pct_max": max(r["share_pct"] for r in later),
        "all_share_pct": round(
            100
            * sum(r["mirror_s"] for r in rows)
            / sum(r["trial_s"] + r["mirror_s"] for r in rows),
            3,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "mlflow.json")
    args = parser.parse_args()
    args.out = args.out.absolute()

    from bench.mlflow_server import MlflowServer

    started = time.perf_counter()
    import mlflow  # noqa: F401 - timed: the one-time cost of --mlflow

    import_s = time.perf_counter() - started
    results = []
    with tempfile.TemporaryDirectory(prefix="hpo-bench-mlflow-") as tmp:
        os.chdir(tmp)  # a sqlite: tracking store puts its artifacts in ./mlruns
        (Path(tmp) / "mlflow-server").mkdir()
        server = MlflowServer(Path(tmp) / "mlflow-server")
        server.start()
        try:
            results.append(measure(server.url, Path(tmp) / "server", args))
        finally:
            server.stop()
        local = Path(tmp) / "local"
        results.append(measure(f"sqlite:///{local / 'mlflow.db'}", local, args))

    print(f"import mlflow: {import_s:.2f}s (once per process)")
    print(
        f"{'target':<8} {'first trial':>12} {'later median':>13} {'share median':>13} "
        f"{'share max':>10} {'share all':>10}"
    )
    for r in results:
        print(
            f"{r['uri']:<8} {r['first_trial_mirror_s']:>11.3f}s {r['later_mirror_s_median']:>12.3f}s "
            f"{r['later_share_pct_median']:>12.2f}% {r['later_share_pct_max']:>9.2f}% "
            f"{r['all_share_pct']:>9.2f}%"
        )
        print(
            "         per trial (trial_s / mirror_s): "
            + ", ".join(f"{t['trial_s']:.1f}/{t['mirror_s']:.3f}" for t in r["trials"])
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    import keras
    import optuna

    args.out.write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "import_mlflow_s": round(import_s, 3),
                "results": results,
                "versions": {
                    "python": platform.python_version(),
                    "mlflow": mlflow.__version__,
                    "keras": keras.__version__,
                    "optuna": optuna.__version__,
                },
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
