"""``hpo data inspect`` shows users what will be trained on and what was skipped."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import invoke_cli, run_cli
from tests.data_samples import link_images, write_faulty_class


def _faulty_folder(catsdogs_dir: Path, root: Path) -> Path:
    data = root / "photos"
    write_faulty_class(data / "odd")
    link_images(sorted((catsdogs_dir / "train" / "cats").glob("*.jpg"))[:8], data / "cat")
    return data


def test_inspect_shows_layout_counts_problems_and_cache_state(
    catsdogs_dir: Path, tmp_path: Path
) -> None:
    import typer
    from typer.testing import CliRunner

    from hpo.cli.data import register

    app = typer.Typer()
    app.callback()(lambda: None)  # keep "data" a sub-command even in this one-group app
    register(app)
    data = _faulty_folder(catsdogs_dir, tmp_path)
    runner = CliRunner()

    first = runner.invoke(
        app, ["data", "inspect", str(data), "--image-size", "32"], terminal_width=200
    )
    assert first.exit_code == 0, first.output
    out = first.output
    assert "folder: class folders" in out and "cache built" in out
    assert "unreadable files (skipped): 4" in out and "odd/empty.jpg: empty file" in out
    assert "ignored OS files: 4" in out and "odd/.DS_Store" in out
    assert "report: " in out and "bad_files.txt" in out
    assert "│ cat " in out and "│ odd " in out and "total" in out

    second = runner.invoke(
        app, ["data", "inspect", str(data), "--image-size", "32"], terminal_width=200
    )
    assert "cache hit, nothing decoded" in second.output


def test_real_cli_reports_bad_path_as_one_line_error(tmp_path: Path) -> None:
    proc = invoke_cli("data", "inspect", str(tmp_path / "missing"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: data folder {tmp_path / 'missing'} does not exist"


def test_real_cli_inspects_chollet_cats_and_dogs(catsdogs_dir: Path) -> None:
    proc = run_cli(
        "data", "inspect", str(catsdogs_dir), "--image-size", "32", env={"COLUMNS": "200"}
    )
    assert "catsdogs: Chollet train/val/test" in proc.stdout
    assert "unreadable files (skipped): 0" in proc.stdout
    assert "validation/dogs/dog.1273.jpg" in proc.stdout
