"""The KerasTuner engine: one search-space file for both engines, every KerasTuner trial
mirrored into the Optuna study, its search resumed by re-running, and the option errors."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.score import best_so_far
from hpo.space import load_space
from hpo.study import run_study
from hpo.study.keras_tuner_loop import TRIAL_ID_ATTR, tuner_dir
from hpo.study.setup import prepare_run
from tests.conftest import REPO, interrupt_once_running, invoke_cli, small_space, trial_artifacts

SPACE = REPO / "search_spaces" / "demo.toml"


def test_each_param_maps_onto_the_distribution_optuna_records_and_a_keras_tuner_hp() -> None:
    import keras_tuner

    space = load_space("demo")
    study = optuna.create_study()
    trial = study.ask()
    space.sample(trial)
    hp = keras_tuner.HyperParameters()
    for name, param in space.params.items():
        declared = param.declare(hp)
        if param.kind == "fixed":
            assert param.distribution() is None and name not in trial.distributions
            assert declared == param.value and type(hp._hps[name][0]).__name__ == "Fixed"
            continue
        assert trial.distributions[name] == param.distribution()
        kt = hp._hps[name][0]
        if param.kind == "categorical":
            assert list(kt.values) == list(param.domain.choices)
        else:
            assert (kt.min_value, kt.max_value) == (param.domain.low, param.domain.high)
            assert kt.sampling == ("log" if param.domain.log else "linear")
            assert type(kt).__name__ == ("Float" if param.kind == "float" else "Int")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "sklearn"], "error: unknown engine 'sklearn' (valid: optuna, keras-tuner)"),
        (
            ["--engine", "keras-tuner", "--tuner", "grid"],
            "error: unknown tuner 'grid' (valid: hyperband, bayesian, random)",
        ),
        (["--tuner", "random"], "error: --tuner applies to --engine keras-tuner, not optuna"),
        (
            ["--engine", "keras-tuner", "--strategy", "random"],
            "error: --strategy applies to --engine optuna",
        ),
        (
            ["--engine", "keras-tuner", "--tuner", "random", "--space", "FACTOR"],
            "keras_tuner.factor applies to --tuner hyperband, not random",
        ),
    ],
)
def test_settings_for_another_engine_or_tuner_are_one_line_errors(
    tmp_path: Path, args: list[str], message: str
) -> None:
    space = tmp_path / "factor.toml"
    space.write_text(SPACE.read_text() + "\n[keras_tuner]\nfactor = 2\n")
    args = [str(space) if a == "FACTOR" else a for a in args]
    proc = invoke_cli(
        "run", "demo", "--storage", "sqlite:///e.db", *args, cwd=tmp_path, check=False
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr.strip().splitlines()[-1] and "Traceback" not in proc.stderr
    assert "decod" not in proc.stderr  # refused before any image was loaded


def test_a_worker_cannot_use_the_keras_tuner_engine(tmp_path: Path) -> None:
    proc = invoke_cli(
        "worker",
        "demo",
        "--engine",
        "keras-tuner",
        "--storage",
        "sqlite:///w.db",
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip().splitlines()[-1].startswith("error: hpo worker needs --engine optuna")
    )


def test_split_seed_and_search_seed_are_separate(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    kwargs = {"storage": storage, "image_size": 16, "epochs": 1, "artifacts": tmp_path / "art"}
    a = prepare_run("demo", study_name="a", seed=1, **kwargs)
    b = prepare_run("demo", study_name="b", seed=2, **kwargs)
    c = prepare_run("demo", study_name="c", seed=1, split_seed=1, **kwargs)
    assert a.data.split_fingerprint == b.data.split_fingerprint  # other search, same split
    assert c.data.split_fingerprint != a.data.split_fingerprint
    assert (a.seed, b.seed, c.seed) == (1, 2, 1) and a.sampler_seed != b.sampler_seed
    assert [s.study.user_attrs["hpo:split_seed"] for s in (a, b, c)] == [0, 0, 1]
    # resumed without --split-seed: the record's; another one is refused naming the option
    assert prepare_run("demo", study_name="c", seed=5, **kwargs).data.seed == 1
    with pytest.raises(Exception, match=r"different split seed \(--split-seed\): 1 there, 0 now"):
        prepare_run("demo", study_name="c", split_seed=0, **kwargs)


@pytest.mark.slow
def test_resume_takes_size_and_epochs_from_the_record_without_decoding(
    tmp_path: Path, catsdogs_dir: Path
) -> None:
    cache = tmp_path / "cache"
    env = {"HPO_CACHE_DIR": str(cache)}
    common = ["--data-dir", str(catsdogs_dir), "--storage", "sqlite:///r.db", "--trials", "1"]
    small = str(small_space(tmp_path, "catsdogs"))
    first = ["--image-size", "16", "--epochs", "1", "--space", small]
    invoke_cli("run", "catsdogs", *common, *first, cwd=tmp_path, env=env)
    entries = sorted(p.name for p in cache.iterdir() if p.is_dir())
    proc = invoke_cli("run", "catsdogs", *common, cwd=tmp_path, env=env)  # from the record
    assert "16px, cache hit, no image decoding" in proc.stderr
    refused = invoke_cli(
        "run", "catsdogs", *common, "--image-size", "48", cwd=tmp_path, env=env, check=False
    )
    assert refused.returncode == 2
    assert "different image size (--image-size): 16 there, 48 now" in refused.stderr
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == entries  # no 150 or 48 px
    trials = optuna.load_study(
        study_name="catsdogs", storage=f"sqlite:///{tmp_path / 'r.db'}"
    ).trials
    assert [t.user_attrs["epochs_trained"] for t in trials if t.state == TrialState.COMPLETE] == [
        1,
        1,
    ]
    assert {t.params["filters"] for t in trials} <= {4, 8}  # the recorded space, not the shipped


@pytest.mark.slow
def test_hyperband_trials_are_mirrored_and_a_rerun_resumes_the_search(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'kt.db'}"
    art = tmp_path / "art"
    setup = prepare_run(
        "demo",
        storage=storage,
        image_size=16,
        epochs=3,
        engine="keras-tuner",
        tuner="hyperband",
        artifacts=art,
    )
    told: list[tuple[int, str]] = []
    setup.observers.append(lambda study, trial: told.append((trial.number, trial.state.name)))
    from hpo.study import keras_tuner_loop

    keras_tuner_loop.optimize(setup, n_trials=None, timeout=None, budget_epochs=2)
    first = setup.study.get_trials()
    assert [(t.number, t.state.name) for t in first] == told == [(0, "COMPLETE"), (1, "COMPLETE")]

    # the plain command resumes: engine, tuner, size and epochs come from the record, and
    # KerasTuner's own state from the folder beside the artifacts
    study = run_study("demo", storage=storage, n_trials=None, artifacts=art)
    trials = study.get_trials()
    assert (
        study.user_attrs["hpo:engine"] == "keras-tuner"
        and study.user_attrs["hpo:tuner"] == "hyperband"
    )
    ids = [t.user_attrs[TRIAL_ID_ATTR] for t in trials]
    assert ids == [f"{i:04d}" for i in range(len(trials))]  # one search, not a restarted one
    assert len(trials) == 6  # Hyperband with max_epochs 3, factor 3: the whole search ran
    assert (tuner_dir(art, "demo") / "oracle.json").is_file()

    space = setup.space
    for trial in trials:
        assert trial.state == TrialState.COMPLETE
        attrs = trial.user_attrs
        for key in (
            "history",
            "epochs_trained",
            "seconds",
            "best_epoch",
            "val_macro_f1",
            "val_confusion_matrix",
            "seed",
            "val_acc_best",
            "val_acc_last",
        ):
            assert key in attrs, key
        assert trial.distributions == {
            n: p.distribution() for n, p in space.params.items() if p.kind != "fixed"
        }
        curve = attrs["history"]["val_accuracy"]
        start = len(curve) - attrs["epochs_trained"]  # epochs inherited from a promoted trial
        assert sorted(trial.intermediate_values) == list(range(start, len(curve)))
        assert [trial.intermediate_values[e] for e in range(start, len(curve))] == pytest.approx(
            best_so_far(curve)[start:]
        )
        assert trial.value == pytest.approx(max(curve)) and trial.value == attrs["val_acc_best"]
        stored = trial_artifacts(trial)
        # no probabilities if a promotion's own epochs never beat its inherited best
        assert f"learning-curve-trial-{trial.number}.png" in stored
        assert set(stored) <= {
            f"learning-curve-trial-{trial.number}.png",
            f"val-probs-trial-{trial.number}.npy",
        }
        meta = stored[f"learning-curve-trial-{trial.number}.png"]
        assert (art / meta["artifact_id"]).is_file()
        if start:  # a promotion continues its parent's weights and curve
            parent = trials[attrs["continues_trial"]]
            assert parent.params == trial.params
            assert curve[:start] == parent.user_attrs["history"]["val_accuracy"][:start]
    assert any(t.user_attrs.get("continues_trial") is not None for t in trials)
    assert sum(t.user_attrs["epochs_trained"] for t in trials) < sum(
        len(t.user_attrs["history"]["loss"]) for t in trials
    )

    details = json.loads(
        invoke_cli("status", "demo", "--storage", storage, "--json", cwd=tmp_path).stdout
    )
    assert details["best_trials"][0]["value"] == pytest.approx(study.best_value)
    assert (
        f"{study.best_value:.3f}"
        in invoke_cli("status", "demo", "--storage", storage, cwd=tmp_path).stdout
    )

    again = invoke_cli("run", "demo", "--storage", storage, "--artifacts", str(art), cwd=tmp_path)
    assert "KerasTuner's hyperband search is complete" in again.stderr
    assert len(optuna.load_study(study_name="demo", storage=storage).trials) == 6


@pytest.mark.slow
@pytest.mark.parametrize("tuner", ["random", "bayesian"])
def test_random_and_bayesian_tuners_run_end_to_end(tmp_path: Path, tuner: str) -> None:
    storage = f"sqlite:///{tmp_path / 'kt.db'}"
    study = run_study(
        "demo",
        storage=storage,
        n_trials=2,
        image_size=16,
        epochs=1,
        engine="keras-tuner",
        tuner=tuner,
        artifacts=tmp_path / "art",
        seed=3,
    )
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert [t.user_attrs["seed"] for t in trials] == [3, 4]  # search seed + trial number
    assert trials[0].params != trials[1].params
    assert all(t.user_attrs["tuner"] == tuner for t in trials)


@pytest.mark.slow
def test_ctrl_c_records_the_trial_and_keras_tuner_retries_it_on_resume(tmp_path: Path) -> None:
    args = [
        "run",
        "demo",
        "--engine",
        "keras-tuner",
        "--tuner",
        "random",
        "--trials",
        "1",
        "--epochs",
        "6",
        "--image-size",
        "16",
        "--storage",
        "sqlite:///c.db",
    ]
    returncode, stderr = interrupt_once_running(args, tmp_path, tmp_path / "c.db")
    assert returncode == 130, stderr
    assert "Traceback" not in stderr
    storage = f"sqlite:///{tmp_path / 'c.db'}"
    [trial] = optuna.load_study(study_name="demo", storage=storage).trials
    assert trial.state == TrialState.FAIL and "Ctrl-C" in trial.user_attrs["fail_reason"]

    invoke_cli("run", "demo", "--trials", "1", "--storage", "sqlite:///c.db", cwd=tmp_path)
    failed, retried = optuna.load_study(study_name="demo", storage=storage).trials
    assert retried.state == TrialState.COMPLETE
    # KerasTuner's reloaded oracle retries the interrupted configuration first
    assert retried.user_attrs[TRIAL_ID_ATTR] == failed.user_attrs[TRIAL_ID_ATTR] == "0000"
    assert retried.params == failed.params


def test_the_search_seed_seeds_keras_tuners_oracle(tmp_path: Path) -> None:
    from hpo.study.keras_tuner_loop import make_oracle

    setup = prepare_run(
        "demo",
        storage=f"sqlite:///{tmp_path / 'o.db'}",
        image_size=16,
        epochs=1,
        engine="keras-tuner",
        tuner="random",
        artifacts=tmp_path / "art",
    )

    def first_values(seed: int) -> dict:
        setup.seed = seed
        return make_oracle(setup).populate_space("0")["values"]

    assert first_values(0) == first_values(0)  # seed 0 too (KerasTuner's "no seed")
    assert first_values(0) != first_values(1)
