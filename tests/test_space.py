"""Search-space files: the shipped ones load, and mistakes name the file and the key."""

from __future__ import annotations

from pathlib import Path

import keras_tuner
import optuna
import pytest

from hpo.errors import HpoError
from hpo.space import REPO_SPACES, load_space

GOOD = """
[params]
learning_rate = { low = 1e-4, high = 1e-2, log = true }
batch_size = { choices = [16, 32] }
l2 = { low = 1e-6, high = 1e-3, log = true }
dropout = { low = 0.0, high = 0.5 }
conv_blocks = { low = 2, high = 3 }
activation = { choices = ["relu", "gelu"] }
[train]
epochs = 2
image_size = 32
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["demo", "animals10", "catsdogs", "folder"])
def test_shipped_spaces_load_and_sample(name: str) -> None:
    space = load_space(name)
    assert space.path == REPO_SPACES / f"{name}.toml"
    trial = optuna.create_study().ask()
    params = space.sample(trial)
    assert set(params) == {
        "learning_rate",
        "batch_size",
        "l2",
        "dropout",
        "conv_blocks",
        "activation",
        "filters",
        "optimizer",
        "block",
        "growth",
        "dense_units",
        "label_smoothing",
        "weight_decay",
        "lr_schedule",
    }
    low, high = space.params["learning_rate"].values()
    assert low <= params["learning_rate"] <= high
    assert 2 ** params["conv_blocks"] <= space.image_size


def test_defaults_fill_optional_settings(tmp_path: Path) -> None:
    space = load_space(space=write(tmp_path, GOOD))
    assert space.params["optimizer"].value == "adam"
    assert space.pruner["kind"] == "median"
    assert space.split["val_fraction"] == 0.15
    # a space that names no family keeps building (and re-exporting) yesterday's model
    assert {
        name: space.params[name].value
        for name in (
            "block",
            "growth",
            "dense_units",
            "label_smoothing",
            "weight_decay",
            "lr_schedule",
        )
    } == {
        "block": "plain",
        "growth": 2.0,
        "dense_units": 0,
        "label_smoothing": 0.0,
        "weight_decay": 0.004,
        "lr_schedule": "constant",
    }


def test_default_point_is_the_given_default_else_the_middle(tmp_path: Path) -> None:
    text = GOOD.replace(
        "batch_size = { choices = [16, 32] }", "batch_size = { choices = [16, 32], default = 32 }"
    )
    space = load_space(space=write(tmp_path, text))
    assert space.default_point() == {
        "learning_rate": 1e-3,  # geometric middle of 1e-4..1e-2
        "batch_size": 32,  # given
        "l2": 3.2e-5,  # geometric middle, 2 significant digits
        "dropout": 0.25,
        "conv_blocks": 3,  # 2..3, half up
        "activation": "relu",  # the first choice
    }  # fixed parameters (optimizer, block, ...) are not sampled, so not in the point
    # KerasTuner gets the same defaults: a hyperparameter's first value is its default
    hp = keras_tuner.HyperParameters()
    assert {name: p.declare(hp) for name, p in space.params.items() if p.domain} == (
        space.default_point()
    )
    # Optuna's suggest_* take the queued point as it is
    study = optuna.create_study()
    study.enqueue_trial(space.default_point())
    assert {k: v for k, v in space.sample(study.ask()).items() if k in space.default_point()} == (
        space.default_point()
    )


def test_family_keys_are_searchable(tmp_path: Path) -> None:
    space = load_space(
        space=write(
            tmp_path,
            GOOD.replace(
                "[params]",
                """[params]
block = { choices = ["plain", "residual", "separable"] }
growth = { low = 1.5, high = 2 }
dense_units = { choices = [0, 128] }
label_smoothing = 0.1
weight_decay = { low = 1e-5, high = 1e-2, log = true }
lr_schedule = { choices = ["constant", "cosine"] }""",
            ),
        )
    )
    assert space.params["block"].values() == ("plain", "residual", "separable")
    assert space.params["growth"].kind == "float" and space.params["dense_units"].values() == (
        0,
        128,
    )
    assert space.params["label_smoothing"].value == 0.1
    params = space.sample(optuna.create_study().ask())
    assert params["block"] in ("plain", "residual", "separable") and 1.5 <= params["growth"] <= 2


@pytest.mark.parametrize(
    "snippet, message",
    [
        ("learning_rate = { low = 1e-4, high = 1e-2, log = true }", None),  # baseline: no error
        ("lr = 0.1", "unknown key 'params.lr'"),
        ("batch_size = { choices = [16.5] }", "params.batch_size: expected int"),
        ("activation = { choices = ['relu', 'sigmoidal'] }", "'sigmoidal' is not one of"),
        ("dropout = { low = 0.0, high = 1.5 }", "params.dropout: must be in [0, 1)"),
        ("learning_rate = { low = 1e-2, high = 1e-4 }", "low (0.01) is above high"),
        ("l2 = { low = 1e-6, high = 1e-3, step = 2 }", "params.l2: unknown key 'step'"),
        ("block = 'resnet'", "params.block: 'resnet' is not one of plain, residual, separable"),
        ("block = { low = 1, high = 2 }", "params.block: a text parameter takes 'choices'"),
        ("lr_schedule = { choices = ['cosine', 'step'] }", "'step' is not one of constant, cosine"),
        ("growth = 0.5", "params.growth: must be in [1.0, 4.0], got 0.5"),
        ("growth = { low = 1.0, high = 8.0 }", "params.growth: must be in [1.0, 4.0], got 8.0"),
        ("dense_units = -1", "params.dense_units: must be in [0, 4096]"),
        ("dense_units = 0", None),  # 0 means no dense layer, not an error
        ("dense_units = 64.5", "params.dense_units: expected int"),
        ("label_smoothing = 0.7", "params.label_smoothing: must be in [0.0, 0.5]"),
        ("label_smoothing = 0", None),
        ("weight_decay = -1e-4", "params.weight_decay: must be in [0.0, 1.0]"),
        ("learning_rate = { low = 1e-4, high = 1e-2, log = true, default = 1e-3 }", None),
        (
            "learning_rate = { low = 1e-4, high = 1e-2, log = true, default = 0.1 }",
            "params.learning_rate.default: 0.1 is not in the parameter's range or choices",
        ),
        ("batch_size = { choices = [16, 32], default = 64 }", "params.batch_size.default: 64"),
        ("batch_size = { choices = [16, 32], default = 16.5 }", "params.batch_size: expected int"),
        ("activation = { choices = ['relu'], default = 'gelu' }", "activation.default: 'gelu'"),
        ("dropout = { default = 0.2 }", "params.dropout: give either low and high, or choices"),
    ],
)
def test_bad_params_name_file_and_key(tmp_path: Path, snippet: str, message: str | None) -> None:
    key = snippet.split(" ")[0]
    lines = [line for line in GOOD.splitlines() if not line.startswith(f"{key} ")]
    text = "\n".join(lines).replace("[params]", f"[params]\n{snippet}")
    path = write(tmp_path, text)
    if message is None:
        load_space(space=path)
        return
    with pytest.raises(HpoError) as err:
        load_space(space=path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_bad_fixed_settings(tmp_path: Path) -> None:
    with pytest.raises(HpoError, match="train.epochs: expected int"):
        load_space(space=write(tmp_path, GOOD.replace("epochs = 2", "epochs = 'two'")))
    with pytest.raises(HpoError, match="unknown key 'train.epoch'"):
        load_space(space=write(tmp_path, GOOD.replace("epochs = 2", "epoch = 2")))
    with pytest.raises(HpoError, match="missing key 'params.dropout'"):
        load_space(space=write(tmp_path, GOOD.replace("dropout = { low = 0.0, high = 0.5 }", "")))
    with pytest.raises(HpoError, match="not valid TOML"):
        load_space(space=write(tmp_path, GOOD + "\n[[["))
    with pytest.raises(HpoError, match="5 conv blocks need images of at least 32px"):
        load_space(
            space=write(
                tmp_path,
                GOOD.replace("high = 3 }", "high = 5 }").replace(
                    "image_size = 32", "image_size = 16"
                ),
            )
        )


def test_overrides_are_validated_and_change_the_hash(tmp_path: Path) -> None:
    space = load_space(space=write(tmp_path, GOOD))
    bigger = space.with_overrides(image_size=64, epochs=3)
    assert (bigger.image_size, bigger.epochs) == (64, 3)
    assert bigger.content_hash != space.content_hash
    with pytest.raises(HpoError, match="--epochs"):
        space.with_overrides(epochs=0)


def test_unknown_dataset_without_space_file() -> None:
    with pytest.raises(HpoError, match="no search space for dataset 'mnist'"):
        load_space("mnist")
