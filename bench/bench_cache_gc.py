"""Garbage collection per trial against the size of the study, in a trial child's sequence.

Optuna's storage keeps every trial of a study in memory from the first ``ask`` on, and
Keras' ``clear_session`` runs a full collection before each trial. A trial child freezes
what is alive after loading the backend (``hpo.study.isolate.load_and_freeze_backend``);
this measures the collector's seconds per trial when the study's trials are frozen with
the rest ("read first", what children do) and when they are not ("not read").

    python bench/bench_cache_gc.py [--extra 0,5000] [--trials 8]

Each case runs in its own process: prepare the run, freeze, 8 identical tiny trials on a
SQLite study that holds N extra finished trials. Prints a table, writes
bench/results/cache-gc.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPACE = """
[params]
learning_rate = 0.003
batch_size = 32
l2 = 1e-5
dropout = 0.2
conv_blocks = 2
activation = "relu"
filters = 8
[train]
epochs = 2
image_size = 16
augment = false
"""


def one_case(extra: int, read_first: bool, trials: int) -> dict[str, float]:
    """Runs in a fresh process: what a trial child does, with the collector timed."""
    import optuna

    from hpo.study import optuna_loop
    from hpo.study.isolate import load_and_freeze_backend
    from hpo.study.setup import prepare_run
    from hpo.study.slots import count_finished

    folder = Path(tempfile.mkdtemp())
    (folder / "space.toml").write_text(SPACE)
    kw = dict(
        storage=f"sqlite:///{folder / 's.db'}",
        study_name="s",
        space=str(folder / "space.toml"),
        strategy="random",
        artifacts=str(folder / "art"),
    )
    if extra:  # one real trial, then copies of it; in a child so this process stays bare
        code = f"from hpo.study import run_study; run_study('demo', n_trials=1, **{kw!r})"
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        study = optuna.load_study(study_name="s", storage=kw["storage"])
        t = study.trials[0]
        copy = optuna.trial.create_trial(
            value=t.value,
            params=t.params,
            distributions=t.distributions,
            user_attrs=t.user_attrs,
            intermediate_values=t.intermediate_values,
        )
        study.add_trials([copy] * extra)
        del study, t, copy
    setup = prepare_run("demo", **kw)
    load_and_freeze_backend(setup.study if read_first else None)
    spent = [0.0, 0.0]

    def timer(phase: str, info: dict) -> None:
        if phase == "start":
            spent[1] = time.perf_counter()
        else:
            spent[0] += time.perf_counter() - spent[1]

    gc.callbacks.append(timer)
    before = resource.getrusage(resource.RUSAGE_SELF)
    optuna_loop.optimize(
        setup, n_trials=trials, timeout=None, total=False, done=count_finished(setup.study)
    )
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {
        "extra_trials": extra,
        "read_first": read_first,
        "gc_s_per_trial": round(spent[0] / trials, 4),
        "cpu_s_per_trial": round(cpu / trials, 3),
        "objects_walked": len(gc.get_objects()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", default="0,5000", help="extra finished trials per case")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: one case, as JSON
    args = parser.parse_args()
    if args.case:
        extra, read_first = json.loads(args.case)
        print("CASE " + json.dumps(one_case(extra, read_first, args.trials)))
        return
    rows = []
    for extra in (int(x) for x in args.extra.split(",")):
        for read_first in (False, True):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--trials",
                    str(args.trials),
                    "--case",
                    json.dumps([extra, read_first]),
                ],
                check=True,
                capture_output=True,
                text=True,
                cwd=ROOT,
            ).stdout
            rows.append(json.loads(out.split("CASE ", 1)[1]))
            r = rows[-1]
            print(
                f"{r['extra_trials']:>6} extra trials  {'read first' if read_first else 'not read  '}"
                f"  gc {r['gc_s_per_trial']:.3f} s/trial  cpu {r['cpu_s_per_trial']:.2f} s/trial"
                f"  objects walked {r['objects_walked']}",
                flush=True,
            )
    path = ROOT / "bench/results/cache-gc.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"trials_per_case": args.trials, "rows": rows}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
