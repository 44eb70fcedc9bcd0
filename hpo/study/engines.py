"""Which search engine a run uses: Optuna's ask/tell loop or KerasTuner's tuners.

Both train through :func:`hpo.training.train` on the same :class:`~hpo.study.setup.RunSetup`
and record every trial in the same Optuna study; they differ only in who picks the next
configuration and when a search is over.
"""

from __future__ import annotations

from typing import Any

from hpo.errors import HpoError

ENGINES = ("optuna", "keras-tuner")
TUNERS = ("hyperband", "bayesian", "random")  # KerasTuner's tuners, by --tuner name


def resolve_engine(
    engine: str | None, tuner: str | None, recorded: dict[str, Any], *, workers: bool = False
) -> tuple[str, str]:
    """(engine, tuner) for a run: what was passed, else what the study recorded, else the
    defaults (optuna; hyperband for keras-tuner). The tuner is "" for the Optuna engine.
    ``workers``: the run is an ``hpo worker``, which only the Optuna engine supports
    (KerasTuner's oracle state is a local folder that one process owns)."""
    engine = engine or recorded.get("engine") or "optuna"
    if engine not in ENGINES:
        raise HpoError(f"unknown engine '{engine}' (valid: {', '.join(ENGINES)})")
    if tuner is not None and tuner not in TUNERS:
        raise HpoError(f"unknown tuner '{tuner}' (valid: {', '.join(TUNERS)})")
    if engine == "optuna":
        if tuner is not None:
            raise HpoError("--tuner applies to --engine keras-tuner, not optuna")
        return engine, ""
    if workers:
        raise HpoError(
            "hpo worker needs --engine optuna; the keras-tuner engine runs in one "
            "process per study (use hpo run)"
        )
    return engine, tuner or recorded.get("tuner") or "hyperband"
