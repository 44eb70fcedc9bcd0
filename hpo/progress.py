"""What a running study tells the person watching it: one live line per trial, then a
summary table. The study loop only calls a :class:`Reporter`; the terminal look lives
here (rich, because it redraws one line in place in terminals and in notebooks alike and
degrades to plain lines in CI logs)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import optuna
from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from hpo.score import MONITOR
from hpo.storage import tally_trials, top_trials, user_attr_total
from hpo.trials import EPOCHS_TRAINED, LATENCY_MS, OVER_BUDGET, VAL_MACRO_F1, accuracy

# Line width when output goes to a pipe or a file: rich cannot know a width there and takes
# 80 columns, wrapping a table cell (a study name) over two lines that grep then misses.
# Lines are as long as their content instead, up to this; COLUMNS, when set, still wins.
UNWRAPPED_WIDTH = 1000

# The parameters worth showing on a trial's line, with short labels (the rest are in the
# dashboard and `hpo status`).
KEY_PARAMS = {
    "learning_rate": "lr",
    "batch_size": "bs",
    "conv_blocks": "blocks",
    "activation": "",
    "dropout": "drop",
    "l2": "l2",
}


def format_params(params: Mapping[str, Any]) -> str:
    parts = []
    for key, label in KEY_PARAMS.items():
        if key in params:
            value = params[key]
            text = f"{value:.2g}" if isinstance(value, float) else str(value)
            parts.append(f"{label}={text}" if label else text)
    return " ".join(parts)


class Reporter:
    """Receives the study's events; the base class is silent (for library use and tests)."""

    progress_bars = False  # whether slow steps (decoding the cache) may draw a bar

    def message(self, text: str) -> None:
        """A one-off line: data loaded, cache hit, study resumed."""

    def trial_started(
        self, number: int, params: Mapping[str, Any], epochs: int, runs_on: str = ""
    ) -> None:
        """A trial begins training; ``runs_on`` says its feed and precision."""

    def epoch_ended(self, number: int, epoch: int, logs: Mapping[str, float]) -> None:
        """An epoch of the running trial ended (``epoch`` counts from 0)."""

    def trial_finished(
        self,
        number: int,
        state: str,
        value: float | None,
        seconds: float,
        best: float | None,
        note: str = "",
    ) -> None:
        """The trial ended as COMPLETE, PRUNED or FAIL."""

    def study_finished(self, study: optuna.Study, reason: str) -> None:
        """The loop stopped; ``reason`` says why (trials done, timeout, interrupted)."""


def terminal_console(stderr: bool = False, soft_wrap: bool = False) -> Console:
    """A console for the person at a terminal that stays greppable without one: piped or
    redirected, every table row and line stays whole on one line (see ``UNWRAPPED_WIDTH``)."""
    console = Console(stderr=stderr, highlight=False, soft_wrap=soft_wrap)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = UNWRAPPED_WIDTH
    return console


class RichReporter(Reporter):
    """Terminal reporter: a live line per trial that turns into a permanent one."""

    progress_bars = True

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or terminal_console(stderr=True)
        self._live: Live | None = None
        self._line = ""
        self._curve: list[str] = []
        self._epochs = 0
        self._started = 0.0

    def message(self, text: str) -> None:
        self.console.print(text)

    def trial_started(
        self, number: int, params: Mapping[str, Any], epochs: int, runs_on: str = ""
    ) -> None:
        self._line = f"trial {number:>3}  {format_params(params)}" + (
            f"  ({runs_on})" if runs_on else ""
        )
        self._curve, self._epochs, self._started = [], epochs, time.monotonic()
        self._live = Live(
            self._render(), console=self.console, transient=True, refresh_per_second=4
        )
        self._live.start()

    def epoch_ended(self, number: int, epoch: int, logs: Mapping[str, float]) -> None:
        value = logs.get(MONITOR)
        self._curve.append("-" if value is None else f"{value:.3f}")
        if self._live is not None:
            self._live.update(self._render())

    def _render(self) -> Text:
        epoch = len(self._curve)
        return Text(
            f"{self._line}  epoch {epoch}/{self._epochs}  val_acc {' '.join(self._curve)}"
            f"  {time.monotonic() - self._started:.0f}s"
        )

    def trial_finished(
        self,
        number: int,
        state: str,
        value: float | None,
        seconds: float,
        best: float | None,
        note: str = "",
    ) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        outcome = {
            "COMPLETE": f"[green]val_acc {value:.3f}[/green]" if value is not None else "complete",
            "PRUNED": f"[yellow]{note or f'pruned at epoch {len(self._curve)}'}[/yellow]",
            "FAIL": f"[red]failed: {note}[/red]",
        }.get(state, state)
        best_text = f"best {best:.3f}" if best is not None else "best -"
        curve = " ".join(self._curve)
        self.console.print(f"{self._line}  [{curve}]  {outcome}  {seconds:.0f}s  {best_text}")

    def study_finished(self, study: optuna.Study, reason: str) -> None:
        self.console.print(summary_table(study))
        self.console.print(reason)


class EpochBar(Reporter):
    """A progress bar over the retraining epochs with the latest training loss and accuracy
    (there is no validation curve to show: validation is part of the training data)."""

    progress_bars = True

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def message(self, text: str) -> None:
        self.console.print(text)

    def trial_started(
        self, number: int, params: Mapping[str, Any], epochs: int, runs_on: str = ""
    ) -> None:
        self._progress = Progress(
            TextColumn("trial {task.fields[trial]} epoch"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn("{task.fields[logs]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self._task = self._progress.add_task("retrain", total=epochs, trial=number, logs="")
        self._progress.start()

    def epoch_ended(self, number: int, epoch: int, logs: Mapping[str, float]) -> None:
        if self._progress is not None and self._task is not None:
            text = f"loss {logs.get('loss', float('nan')):.3f} acc {logs.get('accuracy', float('nan')):.3f}"
            self._progress.update(self._task, completed=epoch + 1, logs=text)

    def trial_finished(
        self,
        number: int,
        state: str,
        value: float | None,
        seconds: float,
        best: float | None,
        note: str = "",
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def summary_table(study: optuna.Study, top: int = 5) -> Group:
    """Counts by state and the best trials with their parameters."""
    # Aggregate queries, not every trial: the table closes a run and `hpo status STUDY`, also
    # on a study of 10,000 trials.
    counts = tally_trials(study._storage, study._study_id).counts
    over = user_attr_total(study._storage, study._study_id, OVER_BUDGET)
    title = (
        f"study '{study.study_name}': {counts['COMPLETE']} complete, {counts['PRUNED']} pruned"
        f"{f' ({over} over budget, never trained)' if over else ''}, "
        f"{counts['FAIL']} failed, {counts['RUNNING']} running"
    )
    table = Table()
    table.add_column("trial", justify="right")
    table.add_column("val_acc", justify="right")
    table.add_column("macro_f1", justify="right")
    table.add_column("epochs", justify="right")
    table.add_column("latency ms", justify="right")  # at batch 1 (hpo.cost)
    table.add_column("params")
    for trial in top_trials(study._storage, study._study_id, top):
        f1 = trial.user_attrs.get(VAL_MACRO_F1)
        latency = trial.user_attrs.get(LATENCY_MS)
        table.add_row(
            str(trial.number),
            f"{accuracy(trial) or 0.0:.3f}",
            "-" if f1 is None else f"{f1:.3f}",
            str(trial.user_attrs.get(EPOCHS_TRAINED, "-")),
            "-" if latency is None else f"{latency:.3g}",
            format_params(trial.params),
        )
    return titled(title, table)


def titled(title: str, table: Table) -> Group:
    """The table under its title, a line of its own: rich wraps a table's own title at the
    table's width, which would break a long study name over lines at any console width."""
    return Group(Text(title, style="table.title"), table)
