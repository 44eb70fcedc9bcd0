"""Seeing a search: trial learning-curve artifacts, `hpo status`, `hpo explain`, `hpo dashboard`.

The real CLI (``hpo.cli.main``; a subprocess where a fresh process is the point), real SQLite,
real Keras models at 16-32 px; the browser test is in test_dashboard_browser.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from PIL import Image

from hpo.score import best_so_far
from tests.conftest import REPO, invoke_cli, run_cli, trial_artifacts
from tests.viz_helpers import PNG_MAGIC, dashboard, listening_addresses

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def assert_two_panels(png: Path) -> None:
    """The learning curve as the dashboard shows it: 1000 x 400 px, loss on the left half and
    accuracy on the right, each half drawn on (lines, labels, grid), not a blank canvas."""
    with Image.open(png) as image:
        assert image.size == (1000, 400)
        pixels = np.asarray(image.convert("RGB"))
    for half in (pixels[:, :500], pixels[:, 500:]):
        assert (half < 250).any(axis=2).mean() > 0.02


def trials_of(cwd: Path, study: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=f"sqlite:///{cwd / 'v.db'}").get_trials()


@pytest.mark.slow
def test_every_finished_trial_uploads_one_learning_curve_png(searched: Path) -> None:
    trained = [
        t
        for name in ("demo", "demo-pruned")
        for t in trials_of(searched, name)
        if "history" in t.user_attrs
    ]
    assert sorted(t.state.name for t in trained) == ["COMPLETE", "COMPLETE", "PRUNED"]
    # a learning curve and the validation probabilities (hpo.predictions) per trial
    assert len(list((searched / "art").iterdir())) == 2 * len(trained) == 6
    for trial in trained:
        assert trial.state in FINISHED
        stored = trial_artifacts(trial)
        assert set(stored) == {
            f"learning-curve-trial-{trial.number}.png",
            f"val-probs-trial-{trial.number}.npy",
        }
        meta = stored[f"learning-curve-trial-{trial.number}.png"]
        assert meta["mimetype"] == "image/png"
        png = searched / "art" / meta["artifact_id"]
        assert png.read_bytes()[:8] == PNG_MAGIC
        assert_two_panels(png)
        # the pruner's (and dashboard's) per-epoch values are the trial's score so far: the
        # running best of its validation accuracy (hpo.score), not the raw, noisy curve
        history = trial.user_attrs["history"]
        assert [
            trial.intermediate_values[e] for e in sorted(trial.intermediate_values)
        ] == pytest.approx(best_so_far(history["val_accuracy"]))
        assert len(history["loss"]) == trial.user_attrs["epochs_trained"] >= 1


@pytest.mark.slow
def test_status_lists_studies_with_the_counts_optuna_has(searched: Path) -> None:
    proc = invoke_cli("status", "--storage", "sqlite:///v.db", "--json", cwd=searched)
    listed = {s["name"]: s for s in json.loads(proc.stdout)["studies"]}
    assert sorted(listed) == ["demo", "demo-pruned"]
    table = invoke_cli(
        "status", "--storage", "sqlite:///v.db", cwd=searched, env={"COLUMNS": "200"}
    ).stdout
    for name, entry in listed.items():
        trials = trials_of(searched, name)
        counts = {state: sum(t.state == state for t in trials) for state in TrialState}
        assert (entry["complete"], entry["pruned"], entry["failed"], entry["running"]) == (
            counts[TrialState.COMPLETE],
            counts[TrialState.PRUNED],
            counts[TrialState.FAIL],
            counts[TrialState.RUNNING],
        )
        best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
        assert (entry["best_value"], entry["best_trial"]) == (best.value, best.number)
        assert entry["last_activity"].startswith(
            str(max(t.datetime_complete for t in trials).date())
        )
        [row] = [line.split() for line in table.splitlines() if line.split()[:1] == [name]]
        epochs = sum(int(t.user_attrs.get("epochs_trained", 0)) for t in trials)
        assert row[1:8] == [str(entry[k]) for k in ("complete", "pruned", "failed", "running")] + [
            str(epochs),
            f"{best.value:.3f}",
            f"(#{best.number})",
        ]


@pytest.mark.slow
def test_status_of_one_study_shows_its_best_trials(searched: Path) -> None:
    details = json.loads(
        invoke_cli("status", "demo", "--storage", "sqlite:///v.db", "--json", cwd=searched).stdout
    )
    trials = trials_of(searched, "demo")
    ranked = sorted(trials, key=lambda t: t.value, reverse=True)
    assert [t["number"] for t in details["best_trials"]] == [t.number for t in ranked]
    assert details["best_trials"][0]["params"] == ranked[0].params
    assert details["record"]["dataset"] == "demo" and details["record"]["image_size"] == 16
    text = invoke_cli("status", "demo", "--storage", "sqlite:///v.db", cwd=searched).stdout
    assert "study 'demo': 2 complete, 0 pruned, 0 failed, 0 running" in text
    assert "classes: 4 (circles, squares, stripes, triangles)" in " ".join(text.split())
    assert "objectives: accuracy" in text and "latency runtime" not in text  # none recorded
    # the trials table names what its columns hold
    assert "latency ms" in text


@pytest.mark.slow
def test_status_of_an_unknown_study_names_the_ones_there(searched: Path) -> None:
    proc = invoke_cli("status", "nope", "--storage", "sqlite:///v.db", cwd=searched, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: no study 'nope' in sqlite:///v.db (studies there: demo, demo-pruned)"
    ]
    proc = invoke_cli("status", "--storage", "sqlite:///typo.db", cwd=searched, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: no study database at typo.db")
    assert not (searched / "typo.db").exists()


@pytest.mark.slow
def test_status_does_not_load_keras(searched: Path) -> None:
    code = (
        "import sys; sys.argv = ['hpo', 'status', '--storage', 'sqlite:///v.db']\n"
        "from hpo.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'keras', 'tensorflow', 'jax', 'torch', 'matplotlib'})\n"
        "print('HEAVY', heavy)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=searched,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout


# --- hpo explain --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Bundles with a 2-block and a 3-block model, laid out as the export writes them:
    trained with hpo.training.train, saved as model.keras, with labels and preprocessing."""
    from hpo.data import Split, load_dataset
    from hpo.training import train

    data = load_dataset("demo", None, 32, 0)
    folder = tmp_path_factory.mktemp("bundles")
    made = {}
    for blocks in (2, 3):
        params = dict(
            learning_rate=3e-3,
            batch_size=32,
            l2=1e-5,
            dropout=0.1,
            conv_blocks=blocks,
            activation="relu",
            filters=8,
            optimizer="adam",
        )
        result = train(
            params,
            Split(data.images, data.labels, data.splits["train"][:64]),
            num_classes=len(data.classes),
            epochs=1,
            seed=blocks,
        )
        bundle = folder / f"bundle{blocks}"
        bundle.mkdir()
        result.model.save(bundle / "model.keras")
        (bundle / "labels.json").write_text(json.dumps(dict(enumerate(data.classes))))
        (bundle / "preprocessing.json").write_text(json.dumps({"image_size": 32}))
        made[blocks] = bundle
    (folder / "circle.png").write_bytes((data.root / data.files[0]).read_bytes())
    return made


@pytest.mark.slow
def test_explain_writes_one_feature_map_row_per_conv_block(
    bundles: dict[int, Path], tmp_path: Path
) -> None:
    image = bundles[2].parent / "circle.png"
    heights = {}
    for blocks, bundle in bundles.items():
        out = tmp_path / f"out{blocks}"
        proc = invoke_cli("explain", str(bundle), str(image), "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        rows = [line.split()[0] for line in proc.stdout.splitlines() if line.startswith("  block")]
        assert rows == [f"block{b}_act" for b in range(1, blocks + 1)], proc.stdout
        assert proc.stdout.startswith("prediction: ")
        assert proc.stdout.split()[1] in ("circles", "squares", "stripes", "triangles")
        for name in ("circle-feature-maps.png", "filters.png"):
            assert (out / name).read_bytes()[:8] == PNG_MAGIC
        with Image.open(out / "circle-feature-maps.png") as png:
            heights[blocks] = png.height
    # one row of maps per conv block: 1.6 in at 80 dpi (128 px) each, plus the 0.6 in title
    assert heights == {2: 2 * 128 + 48, 3: 3 * 128 + 48}


@pytest.mark.slow
def test_feature_maps_and_filters_for_the_export(bundles: dict[int, Path], tmp_path: Path) -> None:
    from hpo.bundle import load_bundle
    from hpo.data import decode_image
    from hpo.explain import feature_maps_png, filters_png

    model = load_bundle(bundles[3]).model
    image = decode_image(bundles[3].parent / "circle.png", 32)
    titles = feature_maps_png(
        model, [(image, "circles"), (255 - image, "inverted")], tmp_path / "maps.png", channels=4
    )
    assert len(titles) == 2 * 3
    assert (
        titles[0] == "block1_act 32x32x8 of circles"
        and titles[-1] == "block3_act 8x8x32 of inverted"
    )
    assert filters_png(model, tmp_path / "filters.png") == 8
    assert (tmp_path / "maps.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, message",
    [
        ("no-bundle", "error: "),  # the rest of the line is checked below
        ("not-an-image", "error: cannot read"),
        ("no-image", "error: no image file at"),
    ],
)
def test_explain_bad_input_is_one_line(
    bundles: dict[int, Path], tmp_path: Path, case: str, message: str
) -> None:
    (tmp_path / "notes.png").write_text("not a picture")
    bundle = {"no-bundle": tmp_path}.get(case, bundles[2])
    image = {"not-an-image": tmp_path / "notes.png", "no-image": tmp_path / "missing.png"}.get(
        case, bundles[2].parent / "circle.png"
    )
    proc = invoke_cli("explain", str(bundle), str(image), cwd=tmp_path, check=False)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(message), proc.stderr
    if case == "no-bundle":
        assert "expected a bundle written by `hpo export-best`" in last
    assert "Traceback" not in proc.stderr


# --- hpo dashboard ------------------------------------------------------------------------


def test_dashboard_starts_on_defaults_and_binds_loopback_only(tmp_path: Path) -> None:
    with dashboard(tmp_path) as (port, proc):
        assert listening_addresses(port) == {"127.0.0.1"}
        studies = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies").read())
        assert studies["study_summaries"] == []
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/dashboard/")
        assert page.status == 200 and "text/html" in page.headers["Content-Type"]


def test_dashboard_shows_trials_that_grow_and_finish_after_it_loaded_them(tmp_path: Path) -> None:
    """The dashboard reads a study through Optuna's trial cache (a finished trial once): a
    worker's running trial still shows its new epochs and its end, and new trials appear."""
    import time

    url = f"sqlite:///{tmp_path / 'live.db'}"
    worker = optuna.create_study(study_name="live", storage=url, direction="maximize")
    worker.enqueue_trial({"x": 0.5})
    worker.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    running = worker.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    running.report(0.4, 0)

    with dashboard(tmp_path, "--storage", url, "--artifacts", "art") as (port, _):
        api = f"http://127.0.0.1:{port}/api/studies/{worker._study_id}"

        def trials() -> list[dict]:
            return json.loads(urllib.request.urlopen(api, timeout=30).read())["trials"]

        before = trials()
        assert [t["state"] for t in before] == ["Complete", "Running"]
        assert before[1]["intermediate_values"] == [{"step": 0, "value": 0.4}]

        running.report(0.6, 1)
        worker.tell(running, 0.6)
        worker.enqueue_trial({"x": 0.9})
        worker.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
        time.sleep(2.5)  # optuna-dashboard keeps a small study's trial list for 2 s

        after = trials()
        assert [t["state"] for t in after] == ["Complete", "Complete", "Complete"]
        assert [t["values"] for t in after] == [[0.5], [0.6], [0.9]]
        assert [v["value"] for v in after[1]["intermediate_values"]] == [0.4, 0.6]


@pytest.mark.slow
def test_dashboard_host_option_and_busy_port(tmp_path: Path) -> None:
    with dashboard(tmp_path, "--host", "0.0.0.0") as (port, _):
        assert listening_addresses(port) == {"0.0.0.0"}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        proc = run_cli("dashboard", "--port", str(busy), cwd=tmp_path, check=False, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{busy}: Address already in use (use --port for another port)"
    ]


def test_history_panels_are_drawn_from_the_recorded_curves(tmp_path: Path) -> None:
    from hpo.plots import learning_curve

    history = {
        "loss": [1.2, 0.9, 0.7],
        "val_loss": [1.3, 1.0, 0.95],
        "accuracy": [0.4, 0.6, 0.7],
        "val_accuracy": [0.35, 0.55, 0.6],
    }
    assert_two_panels(learning_curve(history, tmp_path / "curve.png", "trial 7 (complete)"))
