"""`hpo export-best` and `hpo predict` end to end: a real tiny study on real images, the real
CLI, real SQLite; the bundle is reloaded and checked against what the export measured."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pytest

from tests.conftest import invoke_cli, small_space

pytestmark = pytest.mark.slow

BUNDLE_FILES = (
    "model.keras",
    "labels.json",
    "params.json",
    "metrics.json",
    "split.json",
    "confusion_matrix.png",
    "learning_curve.png",
    "preprocessing.json",
    "model_card.md",
    "filters.png",
    "feature_maps/cat.png",
    "feature_maps/dog.png",
)


@dataclass
class Exported:
    cwd: Path
    study: str
    data_dir: Path
    bundle: Path
    proc: subprocess.CompletedProcess[str]

    @property
    def storage(self) -> str:
        return f"sqlite:///{self.cwd / 't.db'}"

    def json(self, name: str) -> dict:
        return json.loads((self.bundle / name).read_text())

    def load_study(self) -> optuna.Study:
        return optuna.load_study(study_name=self.study, storage=self.storage)


def _search_and_export(cwd: Path, dataset: str, data_dir: Path) -> Exported:
    invoke_cli(
        "run",
        dataset,
        "--data-dir",
        str(data_dir),
        "--trials",
        "2",
        "--epochs",
        "1",
        "--image-size",
        "16",
        "--space",
        str(small_space(cwd, dataset)),
        "--storage",
        "sqlite:///t.db",
        cwd=cwd,
    )
    proc = invoke_cli(  # in this process, as predict below: it trains here, not in a child
        "export-best", dataset, "--data-dir", str(data_dir), "--storage", "sqlite:///t.db", cwd=cwd
    )
    return Exported(cwd, dataset, data_dir, cwd / "exports" / dataset, proc)


@pytest.fixture(scope="module")
def catsdogs(tmp_path_factory: pytest.TempPathFactory, catsdogs_dir: Path) -> Exported:
    return _search_and_export(tmp_path_factory.mktemp("catsdogs"), "catsdogs", catsdogs_dir)


@pytest.fixture(scope="module")
def animals(tmp_path_factory: pytest.TempPathFactory, animals10_dir: Path) -> Exported:
    return _search_and_export(tmp_path_factory.mktemp("animals"), "animals10", animals10_dir)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stderr.strip().splitlines()[-1]


def test_export_writes_the_whole_bundle_and_records_it(catsdogs: Exported) -> None:
    assert catsdogs.proc.stdout.strip() == str(catsdogs.bundle)
    for name in BUNDLE_FILES:
        assert (catsdogs.bundle / name).is_file() and (catsdogs.bundle / name).stat().st_size > 0, (
            name
        )
    assert (catsdogs.bundle / "saved_model" / "saved_model.pb").is_file()
    assert not [
        p for p in catsdogs.bundle.parent.iterdir() if p.name.startswith(".")
    ]  # no staging left

    study = catsdogs.load_study()
    metrics = catsdogs.json("metrics.json")
    assert metrics["trial"] == study.best_trial.number
    assert metrics["trial_val_accuracy"] == pytest.approx(study.best_value)
    assert metrics["epochs"] == study.best_trial.user_attrs["retrain_epochs"] == 1
    # the headline numbers are the test confusion matrix's: correct / all, mean per-class F1
    matrix = np.asarray(metrics["test_confusion_matrix"])
    assert metrics["test_accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    assert metrics["test_macro_f1"] == pytest.approx(
        np.mean([metrics["test_per_class"][c]["f1"] for c in ("cat", "dog")])
    )
    assert metrics["test_images"] == 1000 == np.sum(metrics["test_confusion_matrix"])
    assert set(metrics["test_per_class"]) == {"cat", "dog"}
    assert catsdogs.json("labels.json") == {"0": "cat", "1": "dog"}
    preprocessing = catsdogs.json("preprocessing.json")
    assert preprocessing["image_size"] == 16
    # retrained in the precision the study recorded (float32 on a CPU)
    assert preprocessing["training_precision"] == study.user_attrs["hpo:precision"] == "float32"
    params = catsdogs.json("params.json")
    assert {k: params[k] for k in study.best_trial.params} == study.best_trial.params
    assert {"filters", "optimizer"} <= set(params)  # fixed or sampled, every value is there

    card = (catsdogs.bundle / "model_card.md").read_text()
    assert study.user_attrs["hpo:data_fingerprint"] in card
    assert f"hpo export-best catsdogs --trial {metrics['trial']}" in card
    assert "tensorflow" in card and "optuna" in card
    assert "precision: float32 during training" in card

    record = study.user_attrs[f"hpo:export:{metrics['trial']}"]
    assert record["bundle"] == str(catsdogs.bundle)
    assert record["test_accuracy"] == metrics["test_accuracy"]
    stored = {p.name for p in Path(os.environ["HPO_ARTIFACTS"]).iterdir()}  # set by conftest
    assert set(record["artifacts"].values()) <= stored
    assert set(record["artifacts"]) == {
        "metrics.json",
        "confusion_matrix.png",
        "learning_curve.png",
        "filters.png",
        "model_card.md",
        "feature_maps/cat.png",
        "feature_maps/dog.png",
    }
    assert "test accuracy" in catsdogs.proc.stderr and "epoch 1/1" in catsdogs.proc.stderr


def test_reloaded_model_and_saved_model_reproduce_the_test_metrics(catsdogs: Exported) -> None:
    import keras

    from hpo.data import load_dataset
    from hpo.training import evaluate, predict_proba

    model = keras.saving.load_model(catsdogs.bundle / "model.keras", safe_mode=True)
    data = load_dataset("catsdogs", catsdogs.data_dir, 16)  # the study's cache entry
    report = evaluate(model, data.split("test"), data.classes)
    metrics = catsdogs.json("metrics.json")
    assert report["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1.5 / 1000)

    images = np.asarray(data.images[data.splits["test"][:64]], dtype="float32")
    expected = predict_proba(model, images)
    assert keras.backend.backend() == "tensorflow"
    served = keras.layers.TFSMLayer(str(catsdogs.bundle / "saved_model"), call_endpoint="serve")
    probs = np.asarray(served(images))
    np.testing.assert_allclose(np.concatenate([1 - probs, probs], axis=1), expected, atol=1e-5)


def test_search_never_saw_the_test_images(catsdogs: Exported) -> None:
    """The split in the bundle is the one the trials used (same fingerprint as recorded by
    the search) and no test image's bytes are in train or val."""
    split = catsdogs.json("split.json")
    attrs = catsdogs.load_study().user_attrs
    hashes = {
        name: sorted(_sha256(catsdogs.data_dir / rel) for rel in split[name])
        for name in ("train", "val", "test")
    }
    fingerprint = hashlib.sha256(json.dumps(hashes, separators=(",", ":")).encode()).hexdigest()
    assert fingerprint == attrs["hpo:split_fingerprint"] == split["split_fingerprint"]
    assert {k: len(v) for k, v in hashes.items()} == attrs["hpo:split_sizes"]
    assert not (set(hashes["train"]) | set(hashes["val"])) & set(hashes["test"])
    assert all(rel.startswith("test/") for rel in split["test"])


def test_predict_prints_one_line_per_image(catsdogs: Exported) -> None:
    folder = catsdogs.data_dir / "test" / "cats"
    images = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    proc = invoke_cli("predict", str(catsdogs.bundle), str(folder), "--top", "2", cwd=catsdogs.cwd)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(images)
    for line in lines:
        path, top = line.split("\t")
        first, p1, second, p2 = top.split()
        assert {first, second} == {"cat", "dog"} and float(p1) >= float(p2)
        assert float(p1) + float(p2) == pytest.approx(1.0, abs=0.002)

    proc = invoke_cli(
        "predict", str(catsdogs.bundle), str(images[0]), str(images[1]), "--json", cwd=catsdogs.cwd
    )
    result = json.loads(proc.stdout)
    assert [r["path"] for r in result] == [str(images[0]), str(images[1])]
    assert all(r["top"][0]["label"] in ("cat", "dog") for r in result)


def test_predict_reports_bad_files_and_fails_only_when_nothing_worked(
    catsdogs: Exported, tmp_path: Path
) -> None:
    good = catsdogs.data_dir / "test" / "dogs" / "dog.1500.jpg"
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("not a picture\n")
    (tmp_path / ".DS_Store").write_bytes(b"\0\1junk")
    proc = invoke_cli(
        "predict",
        str(catsdogs.bundle),
        str(good),
        str(tmp_path),
        str(tmp_path / "missing.png"),
        "--json",
        cwd=catsdogs.cwd,
    )
    by_path = {Path(r["path"]).name: r for r in json.loads(proc.stdout)}
    assert set(by_path) == {"dog.1500.jpg", "empty.jpg", "notes.jpg", "missing.png"}  # no .DS_Store
    assert "top" in by_path["dog.1500.jpg"]
    assert "0 bytes" in by_path["empty.jpg"]["error"]
    assert "not an image" in by_path["notes.jpg"]["error"]
    assert "empty.jpg\terror: empty file" in proc.stderr

    proc = invoke_cli(
        "predict",
        str(catsdogs.bundle),
        str(tmp_path / "empty.jpg"),
        str(tmp_path / "notes.jpg"),
        cwd=catsdogs.cwd,
        check=False,
    )
    assert _error_line(proc) == "error: none of the 2 inputs could be classified"
    proc = invoke_cli("predict", str(tmp_path), str(good), cwd=catsdogs.cwd, check=False)
    assert "expected a bundle written by `hpo export-best`" in _error_line(proc)


def test_export_refuses_bad_requests_with_one_line(catsdogs: Exported, tmp_path: Path) -> None:
    args = ("--storage", catsdogs.storage, "--data-dir", str(catsdogs.data_dir))
    proc = invoke_cli("export-best", "catsdogs", *args, cwd=catsdogs.cwd, check=False)
    assert _error_line(proc).startswith(f"error: {catsdogs.bundle} already exists; pass --force")

    proc = invoke_cli("export-best", "dogs", *args, cwd=tmp_path, check=False)
    assert _error_line(proc).startswith("error: no study 'dogs'") and "catsdogs" in proc.stderr

    proc = invoke_cli("export-best", "catsdogs", "--trial", "99", *args, cwd=tmp_path, check=False)
    assert _error_line(proc) == "error: study 'catsdogs' has no trial 99 (trials 0 to 1)"

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = invoke_cli(
        "export-best",
        "catsdogs",
        "--out",
        str(blocker / "bundle"),
        *args,
        cwd=tmp_path,
        check=False,
    )
    assert _error_line(proc).startswith(f"error: cannot write the bundle to {blocker}")

    storage = f"sqlite:///{tmp_path / 'empty.db'}"
    study = optuna.create_study(study_name="nothing", storage=storage)
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    study.tell(study.ask(), state=optuna.trial.TrialState.PRUNED)
    proc = invoke_cli("export-best", "nothing", "--storage", storage, cwd=tmp_path, check=False)
    assert (
        _error_line(proc)
        == "error: study 'nothing' has no complete trial to export (1 pruned, 1 fail)"
    )
    proc = invoke_cli(
        "export-best", "nothing", "--trial", "1", "--storage", storage, cwd=tmp_path, check=False
    )
    assert _error_line(proc).startswith("error: trial 1 of study 'nothing' is PRUNED, not COMPLETE")


def test_trials_store_validation_probabilities_of_their_scoring_epoch(
    catsdogs: Exported,
) -> None:
    """The stored float16 probabilities score the trial's value on the validation split
    (up to float16's ties): they are the scoring epoch's, in the sorted validation rows'
    order."""
    from hpo.data import load_dataset
    from hpo.predictions import stored_probabilities, validation_rows

    study = catsdogs.load_study()
    data = load_dataset("catsdogs", catsdogs.data_dir, 16)
    labels = data.labels[validation_rows(data.split("val"))]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete
    for trial in complete:
        probs = stored_probabilities(trial, study._storage)
        assert probs is not None and probs.shape == (len(labels), 2)
        # float16 rounds probabilities within 2.4e-4 of 0.5 (many, after 1 epoch) onto a tie
        tie = probs[:, 1] == 0.5
        right = int(((probs.argmax(axis=1) == labels) & ~tie).sum())
        assert right <= round(trial.value * len(labels)) <= right + int(tie.sum())
        assert trial.user_attrs["val_probs_seconds"] >= 0


def test_ensemble_export_is_one_safe_model_that_averages_its_members(
    catsdogs: Exported, tmp_path: Path
) -> None:
    import keras

    from hpo.data import load_dataset
    from hpo.ensemble import member_weights
    from hpo.training import evaluate

    out = tmp_path / "E"
    args = ("--storage", catsdogs.storage, "--data-dir", str(catsdogs.data_dir))
    proc = invoke_cli(
        "export-best", "catsdogs", "--ensemble", "2", *args, "--out", str(out), cwd=catsdogs.cwd
    )
    assert proc.stdout.strip() == str(out) and "alone" in proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    ensemble, members = metrics["ensemble"], metrics["ensemble"]["members"]
    assert len(ensemble["steps"]) == 2 == sum(m["count"] for m in members)
    assert sum(m["weight"] for m in members) == pytest.approx(1.0)
    assert all(0.0 <= m["test_accuracy"] <= 1.0 for m in members)
    assert metrics["epochs"] == sum(m["epochs"] for m in members)
    assert metrics["parameters"] == sum(m["parameters"] for m in members)
    assert metrics["latency_ms_per_image"]["keras"]["32"] > 0
    card = (out / "model_card.md").read_text()
    assert "## Ensemble" in card and "test accuracy alone" in card

    model = keras.saving.load_model(out / "model.keras", safe_mode=True)
    # two trials of which greedy may pick one twice: then its model ships unwrapped
    parts = member_weights(model) or [(model, 1.0)]
    assert [w for _, w in parts] == pytest.approx([m["weight"] for m in members])
    data = load_dataset("catsdogs", catsdogs.data_dir, 16)
    images = np.asarray(data.images[data.splits["test"][:64]], dtype="float32")
    expected = sum(w * np.asarray(member.predict_on_batch(images)) for member, w in parts)
    np.testing.assert_allclose(model.predict_on_batch(images), expected, atol=1e-6)
    report = evaluate(model, data.split("test"), data.classes)
    assert report["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1.5 / 1000)
    served = keras.layers.TFSMLayer(str(out / "saved_model"), call_endpoint="serve")
    np.testing.assert_allclose(np.asarray(served(images)), expected, atol=1e-5)

    folder = catsdogs.data_dir / "test" / "dogs"
    proc = invoke_cli("predict", str(out), str(folder), "--tta", cwd=catsdogs.cwd)
    assert len(proc.stdout.strip().splitlines()) == len(list(folder.iterdir()))
    image = folder / "dog.1500.jpg"
    proc = invoke_cli("explain", str(out), str(image), "--out", str(tmp_path / "x"))
    assert ("drawing its heaviest member" in proc.stdout) == (len(members) > 1)


def test_ensemble_refuses_bad_sizes_and_falls_back_without_predictions(
    catsdogs: Exported, tmp_path: Path
) -> None:
    args = ("--storage", catsdogs.storage, "--data-dir", str(catsdogs.data_dir))
    out = ("--out", str(tmp_path / "E"))
    for value in ("0", "-1"):
        proc = invoke_cli(
            "export-best", "catsdogs", f"--ensemble={value}", *args, *out, check=False
        )
        assert _error_line(proc) == f"error: --ensemble must be at least 1 (or 'auto'), not {value}"
    complete = sum(
        t.state == optuna.trial.TrialState.COMPLETE for t in catsdogs.load_study().trials
    )
    proc = invoke_cli(
        "export-best", "catsdogs", "--ensemble", str(complete + 3), *args, *out, check=False
    )
    assert _error_line(proc) == (
        f"error: --ensemble {complete + 3} is more than the {complete} complete trials of "
        "study 'catsdogs' with stored validation predictions"
    )
    assert not (tmp_path / "E").exists() and not list(tmp_path.glob(".E*"))

    # an artifact store without the trials' predictions, as for a study older than them
    proc = invoke_cli(
        "export-best",
        "catsdogs",
        "--ensemble",
        "auto",
        *args,
        *out,
        "--artifacts",
        str(tmp_path / "other-store"),
    )
    assert "has no stored validation predictions" in proc.stderr
    assert "ensemble" not in json.loads((tmp_path / "E" / "metrics.json").read_text())


def test_interrupted_ensemble_export_leaves_no_bundle(
    catsdogs: Exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while a member retrains, after the staging folder was made: nothing at --out,
    no staging folder left."""
    import hpo.export
    from hpo.ensemble import EnsembleRequest

    calls = []

    def interrupted(*args: object, **kwargs: object) -> None:
        calls.append(list((tmp_path).iterdir()))  # the staging folder, there by now
        raise KeyboardInterrupt

    monkeypatch.setattr(hpo.export, "retrain_trial", interrupted)
    out = tmp_path / "E"
    with pytest.raises(KeyboardInterrupt):
        hpo.export.export_best(
            "catsdogs",
            storage=catsdogs.storage,
            data_dir=catsdogs.data_dir,
            out=out,
            ensemble=EnsembleRequest(2),
        )
    assert len(calls) == 1 and calls[0] and calls[0][0].name.startswith(".")
    assert not out.exists() and not list(tmp_path.iterdir())


def test_animals10_export_has_ten_classes(animals: Exported) -> None:
    metrics = animals.json("metrics.json")
    classes = list(animals.json("labels.json").values())
    assert len(classes) == 10 and classes[:2] == ["dog", "horse"]
    assert np.asarray(metrics["test_confusion_matrix"]).shape == (10, 10)
    assert metrics["test_images"] == len(animals.json("split.json")["test"]) > 0
    proc = invoke_cli(
        "predict",
        str(animals.bundle),
        str(animals.data_dir / "ragno"),
        "--top",
        "3",
        cwd=animals.cwd,
    )
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(os.listdir(animals.data_dir / "ragno"))
    assert all(
        len(line.split("\t")[1].split()) == 6
        and set(line.split("\t")[1].split()[::2]) <= set(classes)
        for line in lines
    )


def test_export_refuses_changed_data_and_force_replaces(animals: Exported, tmp_path: Path) -> None:
    changed = tmp_path / "raw-img"
    for folder in ("cane", "gatto"):  # two classes of a few of the same images: other data
        (changed / folder).mkdir(parents=True)
        for image in sorted((animals.data_dir / folder).iterdir())[:4]:
            (changed / folder / image.name).symlink_to(image)
    proc = invoke_cli(
        "export-best",
        "animals10",
        "--storage",
        animals.storage,
        "--data-dir",
        str(changed),
        "--out",
        str(tmp_path / "bundle"),
        cwd=tmp_path,
        check=False,
    )
    assert "no longer matches study 'animals10'" in _error_line(proc)
    assert not (tmp_path / "bundle").exists() and not list(tmp_path.glob(".bundle*"))

    other = next(
        t.number
        for t in animals.load_study().trials
        if t.state == optuna.trial.TrialState.COMPLETE
        and t.number != animals.json("metrics.json")["trial"]
    )
    invoke_cli(
        "export-best",
        "animals10",
        "--trial",
        str(other),
        "--force",
        "--storage",
        animals.storage,
        "--data-dir",
        str(animals.data_dir),
        cwd=animals.cwd,
    )
    assert animals.json("metrics.json")["trial"] == other
    assert f"hpo:export:{other}" in animals.load_study().user_attrs
