"""Compile once per shape: JAX's persistent compilation cache, in a folder beside the decode
cache (``<cache dir>/xla/``), shared by every worker and trial process of a study.

A JAX trial spends its first epoch compiling the train and validation steps (109-178 s of
a worker's first trial on an H100 at 128 px, most of it XLA). XLA's executables can be kept
on disk, keyed by the step's program, the device and the flags; a process that meets the
same step again loads it instead of compiling. The key includes every constant of the
program, so a hit needs the same architecture, batch shape, dropout rate and L2 factor (the
learning rate is a variable and does not count): the re-run of a study, a retrained winner
(``hpo export``), repeated benchmark seeds, a continued Hyperband trial, and the small
steps (initializers, data) that all trials share. On a GPU, JAX also keeps XLA's autotuning
results per fusion in the same folder, which trials with equal convolution shapes share.

JAX reads its settings from the environment when it is imported, so this sets environment
variables and must run before the backend loads: the CLI does it for its process (and the
trial processes it forks inherit it); importing :mod:`hpo` changes nothing. TensorFlow and
PyTorch get nothing from here (see docs/compilation-cache.md for what they offer).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from hpo.data.cache import default_cache_dir

# "off" (or 0, false, no) turns the cache off; a path puts it there instead of <cache dir>/xla.
SETTING_ENV = "HPO_COMPILATION_CACHE"
OFF = ("0", "off", "false", "no")
# JAX's own names (jax/_src/config.py: jax_compilation_cache_dir and friends, upper-cased).
JAX_DIR_ENV = "JAX_COMPILATION_CACHE_DIR"
JAX_ENABLE_ENV = "JAX_ENABLE_COMPILATION_CACHE"
# JAX caches only steps that took at least 1 s to compile by default; the small models of a
# CPU study compile in less, and a load is never slower than a compile, so keep them all.
JAX_MIN_SECONDS_ENV = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"
# Unbounded by default, and then JAX writes entries without a lock. With a bound it evicts
# the least recently used entries and reads and writes under a file lock, so workers that
# write together never leave a half-written entry for another to load.
JAX_MAX_BYTES_ENV = "JAX_COMPILATION_CACHE_MAX_SIZE"
MAX_BYTES = 4 * 2**30


def compilation_cache_dir(environ: MutableMapping[str, str] = os.environ) -> Path | None:
    """Where compiled steps are kept: a user-set ``JAX_COMPILATION_CACHE_DIR``, else
    ``HPO_COMPILATION_CACHE`` when it names a folder, else ``<cache dir>/xla``; None when
    ``HPO_COMPILATION_CACHE`` is off."""
    setting = environ.get(SETTING_ENV, "").strip()
    if setting.lower() in OFF:
        return None
    if environ.get(JAX_DIR_ENV):
        return Path(environ[JAX_DIR_ENV]).expanduser()
    return Path(setting).expanduser() if setting else default_cache_dir(environ) / "xla"


def enable_compilation_cache(environ: MutableMapping[str, str] = os.environ) -> Path | None:
    """Turn JAX's persistent compilation cache on (or, with ``HPO_COMPILATION_CACHE=off``,
    off) in ``environ``; returns the folder, or None when off. Takes effect only in
    processes that import JAX afterwards; variables the caller set are kept."""
    folder = compilation_cache_dir(environ)
    if folder is None:
        environ[JAX_ENABLE_ENV] = "false"  # also when JAX_COMPILATION_CACHE_DIR is set
        return None
    environ.setdefault(JAX_DIR_ENV, str(folder))
    environ.setdefault(JAX_MIN_SECONDS_ENV, "0")
    environ.setdefault(JAX_MAX_BYTES_ENV, str(MAX_BYTES))
    return folder
