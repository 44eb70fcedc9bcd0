"""The study record: what a study was made for, stored as ``hpo:``-prefixed study attrs.

A later run must match it, because values measured on other data or another space are not
comparable; ``hpo export-best`` reads it to rebuild the exact data and space. This module
is the one place that writes and reads those keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from hpo import __version__
from hpo.cost import Budget, latency_runtime
from hpo.data import Dataset
from hpo.errors import HpoError
from hpo.space import SearchSpace, load_space_text

PREFIX = "hpo:"
MARKER = "hpo:data_fingerprint"  # present once a study's record is complete
STRATEGY = "hpo:strategy"
SPLIT_SIZES = "hpo:split_sizes"
LEGACY_STRATEGY = "tpe-median"  # what studies recorded before strategies existed ran

# key -> how a refusal names it
_LABELS = {
    "dataset": "dataset",
    "data_fingerprint": "data (fingerprint)",
    "split_seed": "split seed (--split-seed)",
    "split_fingerprint": "split",
    "image_size": "image size (--image-size)",
    "epochs": "epochs (--epochs)",
    "space_hash": "search space (file content)",
    "engine": "engine (--engine)",
    "tuner": "KerasTuner tuner (--tuner)",
    "precision": "precision ([train] precision, as resolved on this machine)",
    "max_latency_ms": "latency budget (--max-latency-ms)",
    "max_params": "parameter budget (--max-params)",
    "latency_runtime": "latency runtime (onnxruntime with hpo's onnx extra, else keras-compiled)",
    "objectives": "objectives (--objectives)",
}
# What a record written before a key existed means by its absence.
_ABSENT = {
    "engine": "optuna",
    "tuner": "",
    "precision": "float32",
    "max_latency_ms": None,
    "max_params": None,
    "latency_runtime": "",
    "objectives": "accuracy",
}
# What rebuilding a study's data and space (export, bench) needs from its record.
REBUILD_KEYS = (
    "dataset",
    "image_size",
    "split_seed",
    "data_fingerprint",
    "split_fingerprint",
    "space",
    "epochs",
)


@dataclass(frozen=True)
class StudyRecord:
    """The settings that make a study's values comparable with each other."""

    dataset: str
    data_fingerprint: str
    split_seed: int
    split_fingerprint: str
    image_size: int
    epochs: int
    space_hash: str
    engine: str = "optuna"
    tuner: str = ""  # the KerasTuner tuner; empty for the Optuna engine
    precision: str = "float32"  # the compute dtype policy every trial trains in
    # the deployment budget (hpo.cost; None: no limit) and what latencies are measured on
    max_latency_ms: float | None = None
    max_params: int | None = None
    latency_runtime: str = ""  # empty unless a latency budget or objective uses it
    objectives: str = "accuracy"  # comma-separated (hpo.study.objectives)

    @classmethod
    def of(
        cls,
        dataset: Dataset,
        space: SearchSpace,
        engine: str = "optuna",
        tuner: str = "",
        precision: str = "float32",
        budget: Budget | None = None,
        objectives: tuple[str, ...] = ("accuracy",),
    ) -> StudyRecord:
        budget = budget or Budget()
        return cls(
            dataset.name,
            dataset.fingerprint,
            dataset.seed,
            dataset.split_fingerprint,
            space.image_size,
            space.epochs,
            space.content_hash,
            engine,
            tuner,
            precision,
            budget.max_latency_ms,
            budget.max_params,
            latency_runtime_of(budget, objectives),
            ",".join(objectives),
        )

    def attrs(self) -> dict[str, Any]:
        return {f"{PREFIX}{key}": value for key, value in self.__dict__.items()}


def check_or_record(
    study: optuna.Study, record: StudyRecord, data: Dataset, space: SearchSpace
) -> None:
    """Refuse to mix data or spaces inside one study; record them on first use.

    Workers that start together may all find no record. Each attr is its own write, so the
    marker key goes last (a reader that sees it sees the whole record), and a writer checks
    the record again afterwards, which refuses a worker whose different settings were
    overwritten by another's (writes interleaved within milliseconds can still slip past:
    Optuna's storage API offers no compare-and-set on study attrs)."""
    stored = study.user_attrs
    wanted = record.attrs()
    if MARKER not in stored:
        for key, value in wanted.items():
            if key != MARKER:
                study.set_user_attr(key, value)
        study.set_user_attr(f"{PREFIX}classes", list(data.classes))
        study.set_user_attr(SPLIT_SIZES, {k: int(len(v)) for k, v in data.splits.items()})
        study.set_user_attr(f"{PREFIX}space", space.source)
        study.set_user_attr(f"{PREFIX}hpo_version", __version__)
        study.set_user_attr(MARKER, wanted[MARKER])
        stored = study.user_attrs
    check_settings(study.study_name, read_attrs(stored), record.__dict__)


def latency_runtime_of(budget: Budget, objectives: tuple[str, ...]) -> str:
    """What the study's latencies are measured on ("" when neither its budget nor its
    objectives use latency): a latency met on one runtime says nothing about another."""
    uses = budget.max_latency_ms is not None or "latency" in objectives
    return latency_runtime() if uses else ""


def recorded_budget(recorded: dict[str, Any], given: Budget) -> Budget:
    """The budget of a run: each limit given, else the study's recorded one (a resumed study
    keeps its budget; a different one is then refused by :func:`check_settings`)."""
    return Budget(
        given.max_latency_ms
        if given.max_latency_ms is not None
        else recorded.get("max_latency_ms"),
        given.max_params if given.max_params is not None else recorded.get("max_params"),
    )


def val_images(study: optuna.Study) -> int | None:
    """The size of the study's validation split as recorded (None before the record)."""
    sizes = study.user_attrs.get(SPLIT_SIZES) or {}
    return int(sizes["val"]) if sizes.get("val") else None


def read_record(storage: optuna.storages.BaseStorage, study_name: str) -> dict[str, Any]:
    """The complete record of ``study_name`` (keys without the prefix), or {} for a study
    that does not exist or has no record yet; reads attrs only, so it costs no decoding."""
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return {}
    attrs = storage.get_study_user_attrs(study_id)
    return read_attrs(attrs) if MARKER in attrs else {}


def read_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Record keys (without the prefix) of a study's user attrs, absent keys filled in."""
    return {
        **_ABSENT,
        **{
            key.removeprefix(PREFIX): value
            for key, value in attrs.items()
            if key.startswith(PREFIX)
        },
    }


def study_record(study: optuna.Study) -> dict[str, Any]:
    """The record of a study hpo made (keys without the prefix, absent keys filled in);
    a one-line error for a study without one, whose data cannot be rebuilt."""
    recorded = read_attrs(study.user_attrs)
    if any(key not in recorded for key in REBUILD_KEYS):
        raise HpoError(
            f"study '{study.study_name}' has no hpo data record (it was not made "
            "by `hpo run`), so its data cannot be reloaded"
        )
    return recorded


def export_key(trial: int) -> str:
    """The study attr noting the export of ``trial`` (a finished trial takes no new attrs)."""
    return f"{PREFIX}export:{trial}"


def check_settings(study_name: str, recorded: dict[str, Any], wanted: dict[str, Any]) -> None:
    """Refuse the first of ``wanted``'s record keys whose recorded value differs (keys the
    record lacks are not compared). Called before decoding with the settings that need no
    pixels, and again after with the fingerprints."""
    for key, value in wanted.items():
        if key in recorded and key in _LABELS and recorded[key] != value:
            raise HpoError(
                f"study '{study_name}' was made with a different {_LABELS[key]}: "
                f"{_short(recorded[key])} there, {_short(value)} now; "
                f"use --study NEW_NAME to start a separate study"
            )


def recorded_space(
    study_name: str,
    recorded: dict[str, Any],
    *,
    epochs: int | None = None,
    image_size: int | None = None,
) -> SearchSpace:
    """The space a study was made with, at its recorded epochs and image size unless
    ``epochs``/``image_size`` say otherwise (a difference the record check then refuses)."""
    space = load_space_text(recorded["space"], Path(f"<space recorded in study '{study_name}'>"))
    return space.with_overrides(
        epochs=int(recorded["epochs"]) if epochs is None else epochs,
        image_size=(int(recorded["image_size"]) if image_size is None else image_size),
    )


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    hashed = len(text) in (16, 64) and all(c in "0123456789abcdef" for c in text)
    return text[:12] if hashed else text  # fingerprints and hashes, shortened


def recorded_strategy(storage: optuna.storages.BaseStorage, study_name: str) -> str | None:
    """The strategy ``study_name`` was made with; None for a study that does not exist yet."""
    try:
        attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(study_name))
    except KeyError:
        return None
    return attrs.get(STRATEGY) or (LEGACY_STRATEGY if MARKER in attrs else None)


def choose_strategy(
    storage: optuna.storages.BaseStorage, study_name: str, requested: str | None, default: str
) -> str:
    """The recorded strategy, unless another is asked for: a study's values are comparable
    only within one strategy, so a different one is refused, naming both."""
    recorded = recorded_strategy(storage, study_name)
    if requested and recorded and requested != recorded:
        raise HpoError(
            f"study '{study_name}' was made with strategy '{recorded}', not "
            f"'{requested}'; use --study NEW_NAME to start a separate study"
        )
    return requested or recorded or default


def record_strategy(study: optuna.Study, strategy: str) -> None:
    if study.user_attrs.get(STRATEGY) != strategy:
        study.set_user_attr(STRATEGY, strategy)
