"""The documentation a user follows: every example command parses with the real CLI, the
generated reference pages are current and complete, and terminal output stays usable
when it goes to a pipe instead of a terminal."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import typer

from hpo.cli import app
from hpo.space import load_space_text

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
GENERATED = ("cli.md", "search-space-reference.md")
# Pages a user reads for commands to type (the generated CLI reference shows usage patterns).
PAGES = [REPO / "README.md", *sorted(p for p in DOCS.glob("*.md") if p.name not in GENERATED)]
SHELL = ("bash", "sh", "console", "shell")
# A line that runs hpo (after a prompt and environment assignments), not a line of output.
COMMAND_LINE = re.compile(r"^(\$ )?([A-Z_]+=\S+ +)*(\S*/)?hpo ")


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced code block of a Markdown page."""
    blocks, language, body = [], None, []
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if language is None:
                language, body = line.lstrip()[3:].strip(), []
            else:
                blocks.append((language, "\n".join(body)))
                language = None
        elif language is not None:
            body.append(line.strip())
    return blocks


def hpo_commands(text: str) -> list[list[str]]:
    """The argv of each `hpo ...` command in the shell blocks of a Markdown page (after env
    assignments and before pipes, redirections and comments; continued lines joined)."""
    commands = []
    for language, script in code_blocks(text):
        if language not in SHELL:
            continue
        for line in script.replace("\\\n", " ").splitlines():
            if not COMMAND_LINE.match(line):
                continue
            words = shlex.split(line.removeprefix("$ "), comments=True)
            command: list[str] = []
            for word in [*words, "|"]:
                if word in ("|", "||", "&&", ";", "&", ">", ">>", "2>&1"):
                    while command and re.fullmatch(r"[A-Z_]+=.*", command[0]):
                        command.pop(0)
                    if command and Path(command[0]).name == "hpo":
                        commands.append(command[1:])
                    command = [] if word != ">" else ["<redirect>"]
                elif command[:1] != ["<redirect>"]:
                    command.append(word)
    return commands


def parse(argv: list[str]) -> typer.Context:
    """Parse ``hpo ARGV`` with the CLI's own click objects (types, ranges, required
    arguments, unknown options) without running it; bad input raises typer's usage errors
    (``typer.TyperException``: typer 0.29 carries its own copy of click)."""
    command = typer.main.get_command(app)
    ctx: typer.Context | None = None
    name, args = "hpo", list(argv)
    while hasattr(command, "commands"):  # a group: hpo itself, `hpo data`
        ctx = typer.Context(command, info_name=name, parent=ctx)
        while args and args[0] == "--debug":  # the group's only option
            args.pop(0)
        assert args, f"`hpo {' '.join(argv)}` names no command"
        name = args.pop(0)
        sub = command.get_command(ctx, name)
        assert sub is not None, f"`hpo {' '.join(argv)}`: no command {name!r}"
        command = sub
    return command.make_context(name, args, parent=ctx)


EXAMPLES = [(page.name, argv) for page in PAGES for argv in hpo_commands(page.read_text())]


def test_the_pages_hold_examples_of_every_command() -> None:
    named = {argv[0] if argv[0] != "data" else "data" for _, argv in EXAMPLES}
    everything = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert everything <= named, f"no example of {sorted(everything - named)}"


@pytest.mark.parametrize("argv", [a for _, a in EXAMPLES], ids=[p for p, _ in EXAMPLES])
def test_each_example_command_parses_with_the_real_cli(argv: list[str]) -> None:
    try:
        parse(argv)
    except typer.TyperException as exc:
        pytest.fail(f"`hpo {shlex.join(argv)}`: {exc.format_message()}")


def test_a_wrong_example_would_be_caught() -> None:
    for wrong in (["run", "demo", "--trails", "3"], ["status", "--top", "0"], ["export-best"]):
        with pytest.raises(typer.TyperException):
            parse(wrong)
    assert hpo_commands("```bash\nX=1 hpo run demo --trials 3 | tail -1  # note\n```\n") == [
        ["run", "demo", "--trials", "3"]
    ]


def test_generated_reference_pages_are_current() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_reference.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cli_reference_has_every_command_and_option() -> None:
    text = (DOCS / "cli.md").read_text()

    def walk(command: typer.core.TyperCommand, path: str) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, f"{path} {name}")
            return
        heading = f"# `{path}`\n"
        assert heading in text, f"no section for {path} in docs/cli.md"
        section = text.split(heading, 1)[1].split("\n#", 1)[0]
        options = [p for p in command.params if p.param_type_name == "option"]
        assert options, f"{path}: no options read"
        for param in options:
            for opt in param.opts:
                assert f"`{opt}" in section, f"{path}: {opt} is not in docs/cli.md"
            if param.envvar:
                assert f"env var: {param.envvar}" in section, f"{path}: {param.envvar}"

    walk(typer.main.get_command(app), "hpo")


def test_the_search_space_example_in_the_docs_loads() -> None:
    """The annotated example file on the search-spaces page is a valid space."""
    page = (DOCS / "search-spaces.md").read_text()
    example = next(body for language, body in code_blocks(page) if language == "toml")
    space = load_space_text(example, DOCS / "search-spaces.md")
    assert space.epochs == 20 and "learning_rate" in space.params


def test_piped_status_keeps_a_long_study_name_whole(tmp_path: Path) -> None:
    """`hpo status | grep -w NAME` finds the study: without a terminal rich used to wrap
    table cells at 80 columns (`catsd` / `ogs` on two lines)."""
    url = f"sqlite:///{tmp_path / 'S.db'}"
    names = ["catsdogs", "catsdogs-64px-residual-family-search-seed-7-of-a-long-sweep"]
    for name in names:
        study = optuna.create_study(storage=url, study_name=name, direction="maximize")
        study.tell(study.ask(), 0.5)
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    hpo = f"{shlex.quote(sys.executable)} -m hpo"
    for name in names:
        for command in (f"status --storage {url}", f"status {name} --storage {url}"):
            proc = subprocess.run(
                f"{hpo} {command} | grep -w -- {shlex.quote(name)}",
                shell=True,
                capture_output=True,
                text=True,
                env=env,
                cwd=tmp_path,
            )
            assert proc.returncode == 0, f"`hpo {command} | grep -w {name}` found nothing"
    listing = subprocess.run(
        [sys.executable, "-m", "hpo", "status", "--storage", url],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    ).stdout
    rows = [line.split() for line in listing.splitlines()]
    assert [row[0] for row in rows if row and row[0] in names] == sorted(names)
