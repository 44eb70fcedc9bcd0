"""The study record: what a study was made for, stored as ``hpo:``-prefixed study attrs.

A later run must match it, because values measured on other data or another space are not
comparable; ``hpo export-best`` reads it to rebuild the exact data and space. This module
is the one place that writes and reads those keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import optuna

from hpo import __version__
from hpo.data import Dataset
from hpo.errors import HpoError
from hpo.space import SearchSpace

PREFIX = "hpo:"
MARKER = "hpo:data_fingerprint"  # present once a study's record is complete

# key -> how a refusal names it
_LABELS = {"dataset": "dataset", "data_fingerprint": "data (fingerprint)",
           "split_seed": "split seed (--seed)", "split_fingerprint": "split",
           "image_size": "image size (--image-size)", "epochs": "epochs (--epochs)",
           "space_hash": "search space (file content)",
           "precision": "precision ([train] precision, as resolved on this machine)"}
# Values of keys added after studies already existed: what those studies were made with.
_BEFORE_KEY = {f"{PREFIX}precision": "float32"}


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
    precision: str = "float32"  # the compute dtype policy every trial trains in

    @classmethod
    def of(cls, dataset: Dataset, space: SearchSpace, precision: str = "float32") -> StudyRecord:
        return cls(dataset.name, dataset.fingerprint, dataset.seed, dataset.split_fingerprint,
                   space.image_size, space.epochs, space.content_hash, precision)

    def attrs(self) -> dict[str, Any]:
        return {f"{PREFIX}{key}": value for key, value in self.__dict__.items()}


def check_or_record(study: optuna.Study, record: StudyRecord, data: Dataset,
                    space: SearchSpace) -> None:
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
        study.set_user_attr(f"{PREFIX}split_sizes", {k: int(len(v)) for k, v in data.splits.items()})
        study.set_user_attr(f"{PREFIX}space", space.source)
        study.set_user_attr(f"{PREFIX}hpo_version", __version__)
        study.set_user_attr(MARKER, wanted[MARKER])
        stored = study.user_attrs
    for key, value in wanted.items():
        if stored.get(key, _BEFORE_KEY.get(key)) != value:
            label = _LABELS[key.removeprefix(PREFIX)]
            raise HpoError(
                f"study '{study.study_name}' was made with a different {label}: "
                f"{_short(stored.get(key, _BEFORE_KEY.get(key)))} there, {_short(value)} now; "
                f"use --study NEW_NAME to start a separate study")


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text[:12] if len(text) == 64 or len(text) == 16 else text
