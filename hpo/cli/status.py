"""``hpo status [STUDY]``: the studies in a storage, or one study's best trials.

Imports only Optuna and rich (never Keras), so it is quick enough to run in a loop or from a
monitoring script with ``--json``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from hpo.cli.options import DEFAULT_STORAGE, Storage

HELP = "Show the studies in --storage (trial counts, best value, last activity), or one study's best trials."


def status_command(
    study: Annotated[str | None, typer.Argument(help="A study name: show its best trials.")] = None,
    storage: Storage = DEFAULT_STORAGE,
    top: Annotated[int, typer.Option(min=1, help="Best trials to list for one study.")] = 5,
    as_json: Annotated[
        bool, typer.Option("--json", help="Machine-readable output on stdout.")
    ] = False,
) -> None:
    from hpo import status
    from hpo.progress import summary_table, terminal_console
    from hpo.storage import redact
    from hpo.study.objectives import is_multi
    from hpo.study.slots import epochs_used

    console = terminal_console()
    if study is None:
        studies = status.list_studies(storage)
        if as_json:
            print(
                json.dumps(
                    {"storage": redact(storage), "studies": [s.as_json() for s in studies]},
                    indent=2,
                )
            )
        elif studies:
            console.print(status.studies_table(studies, f"studies in {redact(storage)}"))
        else:
            console.print(f"no studies in {redact(storage)} yet")
        return
    found = status.open_study(storage, study)
    if as_json:
        print(
            json.dumps({"storage": redact(storage), **status.study_details(found, top)}, indent=2)
        )
        return
    record = status.record_line(status.study_record(found))
    if record:
        console.print(record)
    console.print(f"epochs trained: {epochs_used(found)}")
    rejected = status.over_budget_line(status.over_budget(found))
    if rejected:
        console.print(rejected)
    console.print(summary_table(found, top))
    if is_multi(found):
        console.print(status.front_table(found))


def register(app: typer.Typer) -> None:
    app.command("status", help=HELP)(status_command)
