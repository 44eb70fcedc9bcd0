"""``hpo export-best STUDY``: retrain the winning trial on train+val, test it once, write a
model bundle (``hpo/export.py`` does the work; this module is options and screen output)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Mapping, Optional

import typer

from hpo.cli.options import DEFAULT_STORAGE, DataDir, Storage
from hpo.progress import Reporter

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

HELP = ("Retrain the best complete trial of STUDY (or --trial N) on train+val, evaluate it "
        "once on the test split and write a model bundle (default exports/STUDY).")


class EpochBar(Reporter):
    """A progress bar over the retraining epochs with the latest training loss and accuracy
    (there is no validation curve to show: validation is part of the training data)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def message(self, text: str) -> None:
        self.console.print(text)

    def trial_started(self, number: int, params: Mapping[str, Any], epochs: int) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)

        self._progress = Progress(TextColumn("trial {task.fields[trial]} epoch"),
                                  MofNCompleteColumn(), BarColumn(),
                                  TextColumn("{task.fields[logs]}"), TimeElapsedColumn(),
                                  console=self.console, transient=False)
        self._task = self._progress.add_task("retrain", total=epochs, trial=number, logs="")
        self._progress.start()

    def epoch_ended(self, number: int, epoch: int, logs: Mapping[str, float]) -> None:
        if self._progress is not None and self._task is not None:
            text = f"loss {logs.get('loss', float('nan')):.3f} acc {logs.get('accuracy', float('nan')):.3f}"
            self._progress.update(self._task, completed=epoch + 1, logs=text)

    def trial_finished(self, number: int, state: str, value: float | None, seconds: float,
                       best: float | None, note: str = "") -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def export_best_command(
    study: Annotated[str, typer.Argument(help="Study name (as given to hpo run --study; default the dataset).")],
    trial: Annotated[Optional[int], typer.Option(min=0, help="Export this trial number instead of the best one.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Bundle folder (default: $HPO_EXPORTS/STUDY or exports/STUDY).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing bundle folder.")] = False,
    storage: Storage = DEFAULT_STORAGE,
    data_dir: DataDir = None,
    artifacts: Annotated[Optional[Path], typer.Option(
        envvar="HPO_ARTIFACTS", help="Artifact store folder (default ./artifacts). Env: HPO_ARTIFACTS.")] = None,
) -> None:
    from rich.console import Console

    from hpo.export import export_best

    console = Console(stderr=True, highlight=False)
    result = export_best(study, storage=storage, trial=trial, data_dir=data_dir, out=out,
                         force=force, artifacts=artifacts, reporter=EpochBar(console))
    m = result.metrics
    console.print(f"trial {result.trial}: test accuracy {m['test_accuracy']:.4f}, macro-F1 "
                  f"{m['test_macro_f1']:.4f} on {m['test_images']} test images "
                  f"(validation accuracy in the search {m['trial_val_accuracy']:.4f}); "
                  f"{result.seconds:.0f}s")
    print(result.bundle)  # stdout: the one thing a script needs


def register(app: typer.Typer) -> None:
    app.command("export-best", help=HELP)(export_best_command)
