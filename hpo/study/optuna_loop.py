"""The Optuna engine: an ask/tell loop over :func:`hpo.study.trial.run_trial`.

The loop uses ask/tell instead of ``study.optimize`` because it must decide things that
``optimize`` hides: how a Ctrl-C is recorded, which errors fail one trial and which stop
the run, and when the study's *total* has been reached across many workers.
"""

from __future__ import annotations

import time

import optuna
from optuna.trial import TrialState

from hpo.storage import fail_stale_trials
from hpo.study.interrupt import INTERRUPTED
from hpo.study.setup import RunSetup, best_value
from hpo.study.slots import claim_trial, epochs_used, is_running, stop_reason
from hpo.study.trial import run_trial
from hpo.trials import FAIL_REASON, SAMPLER_SEED, WORKER

WAIT_SECONDS = 2.0  # how often a worker with no free slot looks again
# A budget the space met when the study began can be out of reach on a slower worker; with
# only --budget-epochs to stop it (rejections train no epoch) the loop would never end.
MAX_REJECTED_IN_A_ROW = 100
RESUME_HINT = (
    "interrupted: the running trial was recorded as FAILED; run the same command to resume"
)
BATCH_DONE = ""  # what optimize returns when it stopped after ``batch`` trials, study not done


def optimize(
    setup: RunSetup,
    *,
    n_trials: int | None,
    timeout: float | None,
    total: bool,
    done: int,
    budget_epochs: int | None = None,
    batch: int | None = None,
    added: int = 0,
) -> str:
    """Train trials until ``n_trials`` are added (or, with ``total``, until the study has
    that many finished), ``timeout`` passes, the study has trained ``budget_epochs`` epochs
    or the user interrupts. ``done`` is the number of finished trials when the run started.
    With ``batch``, return :data:`BATCH_DONE` after that many trials, before the study is
    done and without its summary (one process of :mod:`hpo.study.isolate`; ``added`` counts
    the run's trials in earlier ones); otherwise return why the loop stopped."""
    study, reporter, interrupt = setup.study, setup.reporter, setup.interrupt
    started, first = time.monotonic(), added
    trial: optuna.Trial | None = None
    target = None if n_trials is None else (n_trials if total else done + n_trials)
    reason = "stopped"
    waiting = False
    rejected_in_a_row = 0
    try:
        with interrupt:
            while True:
                interrupt.check()
                fail_stale_trials(study)  # also while waiting: a dead worker's slot comes back here
                reason = stop_reason(
                    study, target, n_trials, added, total, started, timeout, budget_epochs
                )
                if reason:
                    break
                if rejected_in_a_row >= MAX_REJECTED_IN_A_ROW:
                    reason = (
                        f"the last {rejected_in_a_row} configurations were all over the budget "
                        f"({setup.budget.describe()}) on this machine; loosen it"
                    )
                    break
                if batch is not None and added - first >= batch:
                    return BATCH_DONE
                trial = claim_trial(study, target if total else None)
                if trial is None:
                    if not waiting:
                        reporter.message(
                            "every remaining slot is held by a running trial; waiting "
                            "for them to finish (or to be retried if their worker died)"
                        )
                    waiting = True
                    time.sleep(WAIT_SECONDS)
                    continue
                waiting = False
                retry_of = study._storage.get_trial(trial._trial_id).system_attrs.get(
                    "failed_trial"
                )
                if retry_of is not None:
                    reporter.message(
                        f"trial {trial.number} retries trial {retry_of}, whose worker "
                        f"stopped sending heartbeats"
                    )
                trial.set_user_attr(SAMPLER_SEED, setup.sampler_seed)
                if setup.worker:
                    trial.set_user_attr(WORKER, setup.worker)
                try:
                    rejected_in_a_row = rejected_in_a_row + 1 if run_trial(setup, trial) else 0
                except optuna.exceptions.UpdateFinishedTrialError:
                    # Another worker saw no heartbeat for the grace period, failed this trial
                    # and queued its retry; the study already counts that, so drop ours.
                    reporter.trial_finished(
                        trial.number,
                        "FAIL",
                        None,
                        0.0,
                        best_value(study),
                        "declared dead by another worker; retried there",
                    )
                    continue
                added += 1
    except KeyboardInterrupt:
        if trial is not None and is_running(study, trial):  # stopped between ask and training
            trial.set_user_attr(FAIL_REASON, INTERRUPTED)
            study.tell(trial, state=TrialState.FAIL)
        reporter.study_finished(study, f"{RESUME_HINT} ({epochs_line(study)})")
        raise
    reason = f"{reason}; {epochs_line(study)}"
    reporter.study_finished(study, reason)
    return reason


def epochs_line(study: optuna.Study) -> str:
    return f"{epochs_used(study)} epochs trained in study '{study.study_name}'"
