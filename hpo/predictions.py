"""Each trial's class probabilities on the validation split, kept for ensembles.

Ensemble selection (:mod:`hpo.ensemble`) needs, for every candidate trial, what it predicted
on the validation split at the epoch its score comes from (:mod:`hpo.score`: the best
validation accuracy, ties to the earlier epoch).
:class:`hpo.validation_pass.ScoringEpochProbabilities` keeps fit's own validation outputs
of each epoch that raises that best (no second pass), so the probabilities kept are those
of the scoring epoch; a pruned trial keeps those of its best epoch before it was stopped
(its state says so).

They are stored as float16 ``.npy`` artifacts of the trial (``val-probs-trial-N.npy``, in
the artifact store of :mod:`hpo.artifacts`), rows in the order of the sorted validation
rows (:func:`validation_rows`): 2 bytes per image and class, 4 kB per trial on
cats_and_dogs_small's 995 validation images, plus the .npy header.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from hpo.artifacts import attach, read_trial_artifact
from hpo.data import Split

PROBS_FILENAME = "val-probs-trial-{number}.npy"
DTYPE = "float16"


def validation_rows(split: Split) -> np.ndarray:
    """The validation rows in the order the stored probabilities follow."""
    return np.sort(split.rows)


def attach_probabilities(
    trial: optuna.Trial, probs: np.ndarray, artifacts: str | Path | None = None
) -> str:
    """Upload ``probs`` as an artifact of the running ``trial`` (before it is told)."""
    with tempfile.TemporaryDirectory(prefix="hpo-probs-") as tmp:
        path = Path(tmp) / PROBS_FILENAME.format(number=trial.number)
        np.save(path, np.asarray(probs, dtype=DTYPE))
        return attach(trial, path, path=artifacts)


def stored_probabilities(
    trial: FrozenTrial,
    storage: optuna.storages.BaseStorage,
    artifacts: str | Path | None = None,
) -> np.ndarray | None:
    """The validation probabilities stored for ``trial`` (float32), or None: a study older
    than them, a trial that never improved in its own fit, or another machine's store."""
    data = read_trial_artifact(
        trial, storage, PROBS_FILENAME.format(number=trial.number), artifacts
    )
    return None if data is None else np.load(io.BytesIO(data)).astype("float32")
