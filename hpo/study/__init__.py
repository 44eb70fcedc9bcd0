"""Studies: the search loop, one module per job, laid out like ``optuna.study``.

- :mod:`hpo.study.record`: what a study was made for (the ``hpo:`` attrs), written and read.
- :mod:`hpo.study.setup`: what every engine shares before its first trial (space, data,
  storage, the study and its record, the reporter, Ctrl-C handling).
- :mod:`hpo.study.trial`: train one configuration (whichever engine chose it) and tell the
  study how it ended.
- :mod:`hpo.study.slots`: how workers share a study's ``--trials`` total.
- :mod:`hpo.study.engines`: the engines (optuna, keras-tuner) and KerasTuner's tuners by name.
- :mod:`hpo.study.optuna_loop`: the ask/tell loop of the Optuna engine.
- :mod:`hpo.study.keras_tuner_loop`: the KerasTuner engine, its trials mirrored into the study.
- :mod:`hpo.study.run`: :func:`run_study`, the entry point the CLI and notebooks call.
"""

from __future__ import annotations

from hpo.study.run import load_study, run_study

__all__ = ["load_study", "run_study"]
