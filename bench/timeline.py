"""Where a study's time went, per trial and per worker, read from its storage after the fact.

    python bench/timeline.py STORAGE STUDY [--out timeline.json] [--decode-seconds S]

Each trial's row: when it started and ended (seconds after the study's first trial started),
which worker process trained it, state, epochs, and its wall time split into compile, train,
validate (from the epoch and validation-pass seconds hpo records on every trial,
:class:`hpo.timing.EpochTimes`) and other: the rest of the trial, that is building the
model (JAX compiles its initializers there), placing data, storage writes, being told, and
an epoch cut off by an interruption or a failure. Per worker: its span from first start to last
end, and idle, the span's part outside its trials (sampling, forking a trial process,
importing the backend). Totals add them up over workers; ``--decode-seconds`` (measured by
whoever decoded the images, e.g. ``scripts/gpu-check.sh``) is added as it is. Prints one
summary line; ``--out`` writes everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing hpo

import optuna  # noqa: E402

from hpo import trials  # noqa: E402
from hpo.timing import EpochTimes  # noqa: E402

PARTS = ("compile", "train", "validate", "other")


def trial_row(trial: optuna.trial.FrozenTrial, origin: float) -> dict[str, Any]:
    """One trial's timeline entry; times in seconds, ``start``/``end`` after ``origin``."""
    attrs = trial.user_attrs
    assert trial.datetime_start is not None  # only started trials are passed in
    start = trial.datetime_start.timestamp()
    end = trial.datetime_complete.timestamp() if trial.datetime_complete else None
    times = EpochTimes(
        list(attrs.get(trials.EPOCH_SECONDS) or []), list(attrs.get(trials.VAL_SECONDS) or [])
    )
    compiling, training, validating = times.split()
    wall = None if end is None else end - start
    return {
        "number": trial.number,
        "state": trial.state.name,
        "worker": attrs.get(trials.WORKER) or attrs.get(trials.PROCESS) or "",
        "process": attrs.get(trials.PROCESS) or "",
        "start": round(start - origin, 2),
        "end": None if end is None else round(end - origin, 2),
        "wall": None if wall is None else round(wall, 2),
        "compile": None if compiling is None else round(compiling, 2),
        "train": round(training, 2),
        "validate": round(validating, 2),
        "other": None if wall is None else round(max(0.0, wall - sum(times.epoch)), 2),
        "epochs": len(times.epoch),
        "value": trial.value,
        "params": trial.params,
    }


def worker_totals(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per worker: span (first start to last end), busy (inside trials), idle, and the parts."""
    by_worker: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["end"] is not None:
            by_worker[row["worker"]].append(row)
    totals = {}
    for worker, mine in sorted(by_worker.items()):
        span = max(r["end"] for r in mine) - min(r["start"] for r in mine)
        busy = sum(r["wall"] for r in mine)
        parts = {part: round(sum(r[part] or 0.0 for r in mine), 2) for part in PARTS}
        totals[worker] = {
            "trials": len(mine),
            "span": round(span, 2),
            "busy": round(busy, 2),
            "idle": round(max(0.0, span - busy), 2),
            **parts,
        }
    return totals


def timeline(storage: str, study_name: str, decode_seconds: float | None = None) -> dict[str, Any]:
    """The study's per-trial rows, per-worker totals, overall totals and summary line."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    starts = {t.number: t.datetime_start.timestamp() for t in study.trials if t.datetime_start}
    origin = min(starts.values(), default=0.0)
    rows = [trial_row(t, origin) for t in study.trials if t.number in starts]
    workers = worker_totals(rows)
    totals: dict[str, Any] = {
        key: round(sum(w[key] for w in workers.values()), 2) for key in ("busy", "idle", *PARTS)
    }
    ends = [r["end"] for r in rows if r["end"] is not None]
    totals.update(
        {
            "decode": decode_seconds,
            "wall": round(max(ends), 2) if ends else 0.0,
            "trials": len(rows),
            "epochs": sum(r["epochs"] for r in rows),
            "states": trials.state_counts(study.trials),
        }
    )
    result = {"study": study_name, "storage": storage, "trials": rows, "workers": workers}
    result["totals"] = totals
    result["summary"] = summary_line(rows, totals, len(workers))
    return result


def summary_line(rows: list[dict[str, Any]], totals: dict[str, Any], workers: int) -> str:
    """One line: trials by state, wall time, where the workers' time went, and compile
    seconds of each process's first trial (nothing compiled in it yet) against later ones."""
    states = totals["states"]
    spent = sum(totals[k] for k in ("idle", *PARTS)) or 1.0
    share = ", ".join(
        f"{key} {totals[key]:.0f}s ({totals[key] / spent:.0%})" for key in (*PARTS, "idle")
    )
    decode = "" if totals["decode"] is None else f"decode {totals['decode']:.0f}s; "
    seen: set[str] = set()
    first: list[float] = []
    later: list[float] = []
    for row in sorted(rows, key=lambda r: r["start"]):
        process = row["process"] or row["worker"]
        if row["compile"] is not None:
            (later if process in seen else first).append(row["compile"])
        seen.add(process)
    return (
        f"{totals['trials']} trials ({states['COMPLETE']} complete, {states['PRUNED']} pruned, "
        f"{states['FAIL']} failed), {totals['epochs']} epochs in {totals['wall']:.0f}s by "
        f"{workers} worker(s); {decode}{share}; median compile s: each process's first trial "
        f"{_median(first)}, later trials {_median(later)}"
    )


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.1f}" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("storage", help="e.g. sqlite:///study.db")
    parser.add_argument("study")
    parser.add_argument("--out", type=Path, help="write the timeline as JSON here")
    parser.add_argument("--decode-seconds", type=float, default=None)
    args = parser.parse_args()
    result = timeline(args.storage, args.study, args.decode_seconds)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(result["summary"])


if __name__ == "__main__":
    main()
