"""``hpo status``: what is in a storage, without starting a dashboard or loading Keras.

Only Optuna, SQLAlchemy and rich are imported, so the command answers in well under a second
on a laptop or inside a worker container.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from rich.console import Group
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import make_url

from hpo.errors import HpoError
from hpo.progress import format_params, titled
from hpo.storage import (
    open_storage,
    tally_trials,
    top_trials,
    user_attr_total,
    user_attr_values,
)
from hpo.study.objectives import is_multi, pareto_front
from hpo.study.record import read_attrs
from hpo.study.slots import study_epochs
from hpo.trials import BUDGET_VIOLATION, OVER_BUDGET, SUMMARY_KEYS, accuracy

# Study user attrs worth showing (recorded by hpo.study on a study's first run).
RECORD_KEYS = (
    "dataset",
    "image_size",
    "epochs",
    "classes",
    "split_sizes",
    "max_latency_ms",
    "max_params",
    "latency_runtime",
    "objectives",
)


@dataclass(frozen=True)
class StudyStatus:
    """One study's trial counts, best result and time of the last trial start or end."""

    name: str
    complete: int
    pruned: int
    failed: int
    running: int
    waiting: int
    best_value: float | None
    best_trial: int | None
    last_activity: datetime | None
    epochs: int = 0  # epochs trained in the study, what --budget-epochs counts
    over_budget: int = 0  # pruned trials rejected by the deployment budget, never trained

    def as_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["last_activity"] = self.last_activity.isoformat() if self.last_activity else None
        return data


def _status(storage: optuna.storages.BaseStorage, study_id: int, name: str) -> StudyStatus:
    """Aggregate queries only (hpo.storage), so a study of 10,000 trials answers as fast as
    one of 10."""
    tally = tally_trials(storage, study_id)
    best = top_trials(storage, study_id, 1)
    return StudyStatus(
        name,
        tally.counts["COMPLETE"],
        tally.counts["PRUNED"],
        tally.counts["FAIL"],
        tally.counts["RUNNING"],
        tally.counts["WAITING"],
        accuracy(best[0]) if best else None,
        best[0].number if best else None,
        tally.last_activity,
        study_epochs(storage, study_id),
        user_attr_total(storage, study_id, OVER_BUDGET),
    )


def _open(url: str) -> optuna.storages.BaseStorage:
    """The storage, refusing a SQLite file that does not exist: opening it would quietly
    create an empty database where the user mistyped a path."""
    parsed = make_url(url) if "://" in url else None
    if parsed is not None and parsed.get_backend_name() == "sqlite" and parsed.database:
        if parsed.database != ":memory:" and not Path(parsed.database).is_file():
            raise HpoError(
                f"no study database at {parsed.database} (storage {url}); "
                f"pass --storage or set HPO_STORAGE"
            )
    return open_storage(url)


def list_studies(url: str) -> list[StudyStatus]:
    """Every study in the storage at ``url``, by name."""
    storage = _open(url)
    # get_all_studies, not get_all_study_summaries, which loads every trial of every study.
    return [
        _status(storage, s._study_id, s.study_name)
        for s in sorted(storage.get_all_studies(), key=lambda s: s.study_name)
    ]


def open_study(url: str, name: str) -> optuna.Study:
    """The study ``name``; an unknown name is a one-line error listing the studies there."""
    from hpo.study import load_study

    _open(url)
    return load_study(url, name)


def study_details(study: optuna.Study, top: int = 5) -> dict[str, Any]:
    """One study's status, what it was made for and its ``top`` trials with all parameters."""
    return {
        "study": _status(study._storage, study._study_id, study.study_name).as_json(),
        "record": study_record(study),
        "over_budget": over_budget(study),
        "pareto_front": [
            {"number": t.number, "values": t.values, "params": t.params}
            for t in (pareto_front(study) if is_multi(study) else [])
        ],
        "best_trials": [
            {
                "number": t.number,
                "value": accuracy(t),
                "params": t.params,
                **{key: t.user_attrs.get(key) for key in SUMMARY_KEYS},
            }
            for t in top_trials(study._storage, study._study_id, top)
        ],
    }


def over_budget(study: optuna.Study) -> dict[int, str]:
    """Trial number -> why it was rejected before training, for each over-budget trial."""
    return user_attr_values(study._storage, study._study_id, BUDGET_VIOLATION)


def front_table(study: optuna.Study) -> Group:
    """A two-objective study's Pareto front, cheapest first."""
    names = study.metric_names or ["objective 0", "objective 1"]
    table = Table(box=None, pad_edge=False, header_style="bold underline")
    for column in ("trial", *names):
        table.add_column(column, justify="right")
    table.add_column("params")
    for t in pareto_front(study):
        table.add_row(
            str(t.number), f"{t.values[0]:.3f}", f"{t.values[1]:.4g}", format_params(t.params)
        )
    return titled(f"Pareto front of study '{study.study_name}' ({len(table.rows)} trials)", table)


def over_budget_line(rejected: dict[int, str]) -> str:
    """The over-budget trials as one line ("" when there are none)."""
    if not rejected:
        return ""
    listed = "; ".join(f"#{n} {why}" for n, why in rejected.items())
    return f"over budget, rejected before training (0 epochs): {listed}"


def study_record(study: optuna.Study) -> dict[str, Any]:
    """What the study was made for (dataset, image size, epochs, classes, split sizes)."""
    recorded = read_attrs(study.user_attrs)
    return {key: recorded.get(key) for key in RECORD_KEYS}


def studies_table(studies: list[StudyStatus], title: str) -> Group:
    """One row per study: counts by state, epochs trained, best val_acc and its trial, last
    activity; under it, when a deployment budget rejected any trials before training (they
    are among the pruned), how many per study."""
    table = Table(box=None, pad_edge=False, header_style="bold underline")
    table.add_column("study", overflow="fold")
    for column in ("complete", "pruned", "failed", "running", "epochs", "best (trial)"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("last activity", no_wrap=True)
    for s in studies:
        table.add_row(
            s.name,
            str(s.complete),
            str(s.pruned),
            str(s.failed),
            str(s.running),
            str(s.epochs),
            "-" if s.best_value is None else f"{s.best_value:.3f} (#{s.best_trial})",
            s.last_activity.strftime("%Y-%m-%d %H:%M") if s.last_activity else "-",
        )
    rejected = ", ".join(f"{s.name} {s.over_budget}" for s in studies if s.over_budget)
    if not rejected:
        return titled(title, table)
    note = Text(f"pruned over budget, never trained: {rejected}")
    return Group(titled(title, table), note)


def record_line(record: dict[str, Any]) -> str:
    """The record as one line; long class lists become their count and first names."""
    parts = []
    for key, value in record.items():
        if isinstance(value, list):
            value = f"{len(value)} ({', '.join(map(str, value[:4]))}{', ...' if len(value) > 4 else ''})"
        elif isinstance(value, dict):
            value = " ".join(f"{k} {v}" for k, v in value.items())
        if value not in (None, ""):  # e.g. no latency runtime: the study uses no latency
            parts.append(f"{key.replace('_', ' ')}: {value}")
    return "; ".join(parts)
