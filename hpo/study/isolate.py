"""Trials in child processes, so a worker's memory stays flat over a long study.

TensorFlow keeps every traced training step alive for the life of the process:
TensorFlow's ``custom_gradient`` (which Keras' optimizer reaches through
``ReplicaContext.all_reduce``) registers each trace's gradient in TensorFlow's global
gradient registry, which nothing ever empties, so ``clear_session`` cannot free the step's
graph. That is 2 entries and about 12 MiB per trial at 16 px (bench/bench_soak.py), whatever
hpo does in-process without reaching into TensorFlow's private modules. So a worker forks a
child that runs ``per_process`` trials with the ordinary loop (same reporter, heartbeats,
pruning, artifacts, Ctrl-C) and exits, handing the memory back to the system.

The parent never imports the backend (only the child does, which is the fixed cost per
child), so forking it is safe; the data cache is memory-mapped, so a child reads the same
pages without copying them.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import sys
import time
import traceback
from typing import Any

import optuna
from optuna.storages import RDBStorage

from hpo.errors import HpoError
from hpo.study import optuna_loop
from hpo.study.setup import RunSetup, announce_backend


def optimize_in_children(
    setup: RunSetup,
    *,
    n_trials: int | None,
    timeout: float | None,
    total: bool,
    done: int,
    per_process: int,
    budget_epochs: int | None = None,
) -> None:
    """:func:`hpo.study.optuna_loop.optimize`, ``per_process`` trials per child process.

    Refused once this process has imported Keras: a backend's threads do not survive a fork,
    and the child would hang (a notebook that already trained a model passes 0)."""
    if "keras" in sys.modules:
        raise HpoError(
            "trials in child processes need a process that has not imported Keras "
            "(a forked backend can hang); use trials_per_process=0 here, or start "
            "the run from a fresh process such as `hpo run`"
        )
    context = multiprocessing.get_context("fork")
    started, added, first = time.monotonic(), 0, True
    while True:
        left = None if timeout is None else timeout - (time.monotonic() - started)
        if left is not None and left <= 0:  # no child (and no backend import) just to stop
            setup.reporter.study_finished(setup.study, f"timeout of {timeout:g}s reached")
            return
        kwargs = {
            "n_trials": n_trials,
            "timeout": left,
            "total": total,
            "done": done,
            "budget_epochs": budget_epochs,
            "batch": per_process,
            "added": added,
        }
        outcome, detail = _run_child(context, setup, kwargs, announce=first)
        first = False
        if outcome == "interrupted":
            raise KeyboardInterrupt
        if outcome == "hpo_error":
            raise HpoError(detail)
        if outcome == "error":
            raise RuntimeError(f"a trial process failed:\n{detail}")
        if outcome == "stopped":
            return
        added += per_process  # a batch ends after exactly per_process started trials


def _run_child(
    context: Any, setup: RunSetup, kwargs: dict[str, Any], announce: bool
) -> tuple[str, str]:
    """Run one child to its end; Ctrl-C and SIGTERM sent to this process are passed on to it
    (it has its own process group, so a terminal's Ctrl-C reaches it only through here)."""
    reader, writer = context.Pipe(duplex=False)
    child = context.Process(
        target=_child_main, args=(setup, writer, kwargs, announce, os.getpid()), name="hpo-trials"
    )
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def forward(signum: int, frame: Any) -> None:
        if child.pid:
            try:
                os.kill(child.pid, signum)
            except ProcessLookupError:
                pass

    for sig in previous:
        signal.signal(sig, forward)
    try:
        child.start()
        writer.close()
        try:
            outcome, detail = reader.recv()
        except EOFError:  # died without a word: killed (out of memory?) or crashed
            child.join()
            raise HpoError(
                f"the trial process exited with code {child.exitcode} before "
                f"reporting (killed by the system for memory?); its running trial "
                f"is retried after the heartbeat grace period"
            ) from None
        child.join()
        return outcome, detail
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        reader.close()


def _die_with(parent: int) -> None:
    """A SIGKILLed worker must not leave its trial process training on: the trial's heartbeats
    have to stop, so that another worker fails it and retries its parameters (Linux's
    PR_SET_PDEATHSIG; elsewhere the child ends at the end of its batch)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the worker died before the line above took effect
        os._exit(1)


def load_and_freeze_backend(study: optuna.Study | None = None) -> None:
    """Load the backend, then move every object alive now (the ~450k that importing Keras and
    TensorFlow leaves) into the garbage collector's permanent generation. ``clear_session``
    runs a full collection before each trial, which otherwise walks them all every time
    (~0.25 s per trial on a 2-core CPU). For a process that trains until it ends (a trial
    child, a test process): those objects live as long as it anyway.

    With ``study``, its trials are read first: Optuna's storage keeps every trial of the
    study in memory from the first ``ask`` on, so frozen with the rest they no longer make
    each collection grow with the study (``bench/bench_cache_gc.py``, 5,000 finished trials:
    0.145 s of collection per trial without this, 0.029 s with it, as on an empty study)."""
    import keras  # noqa: F401 - what the trials would import first

    if study is not None:
        study.get_trials(deepcopy=False)  # the first ask would read them all anyway
    gc.collect()
    gc.freeze()


def _child_main(
    setup: RunSetup, conn: Any, kwargs: dict[str, Any], announce: bool, parent: int
) -> None:
    _die_with(parent)
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # until the loop installs its own
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # The parent's pooled database connections must not be shared; open new ones here.
    storage = setup.study._storage  # optuna caches an RDB storage in front of it
    backend = getattr(storage, "_backend", storage)
    if isinstance(backend, RDBStorage):
        backend.engine.dispose(close=False)
    try:
        if announce:
            announce_backend(setup.reporter, setup.execution)
        load_and_freeze_backend(setup.study)
        reason = optuna_loop.optimize(setup, **kwargs)
        conn.send(("batch" if reason == optuna_loop.BATCH_DONE else "stopped", reason))
    except KeyboardInterrupt:
        conn.send(("interrupted", ""))
    except HpoError as exc:
        conn.send(("hpo_error", str(exc)))
    except BaseException:  # noqa: BLE001 - reported by the parent, which then stops
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()
