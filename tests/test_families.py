"""Model families (block = plain | residual | separable) and the compile recipe: every family
names its blocks for `hpo explain`, reloads in safe mode, serves the same numbers as a
SavedModel; label smoothing, weight decay, the cosine schedule and flip averaging do what
the search space promises."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from hpo.data import Split
from hpo.explain import feature_maps_png, filters_png
from hpo.model import block_widths, build_model, conv_block_outputs
from hpo.recipe import learning_rate, make_loss
from hpo.training import evaluate, predict_proba, train

BASE = dict(
    learning_rate=3e-3,
    batch_size=16,
    l2=1e-5,
    dropout=0.1,
    conv_blocks=3,
    activation="relu",
    filters=4,
    optimizer="adam",
    growth=1.5,
    dense_units=8,
)


def pictures(
    n: int, size: int = 16, classes: int = 2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Images whose brightness says their class: learnable in an epoch or two."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    base = 40 + labels[:, None, None, None] * (170 // max(1, classes - 1))
    images = np.clip(base + rng.normal(0, 20, (n, size, size, 3)), 0, 255).astype(np.uint8)
    return images, labels


@pytest.mark.parametrize(  # the fast tier (-m "not slow") takes one family, the full suite all
    "family",
    [
        "plain",
        pytest.param("residual", marks=pytest.mark.slow),
        pytest.param("separable", marks=pytest.mark.slow),
    ],
)
def test_family_blocks_explain_and_reload_safely(family: str, tmp_path: Path) -> None:
    params = {**BASE, "block": family}
    assert block_widths(params) == [4, 6, 9]
    model = build_model(params, num_classes=2, image_size=16, augment=False)
    assert conv_block_outputs(model) == ["block1_act", "block2_act", "block3_act"]
    assert [model.get_layer(f"block{b}_act").output.shape[1:] for b in (1, 2, 3)] == [
        (16, 16, 4),
        (8, 8, 6),
        (4, 4, 9),
    ]
    kinds = {layer.name: type(layer).__name__ for layer in model.layers}
    assert kinds["block1_conv"] == "Conv2D"  # explain draws its RGB filters in every family
    assert kinds["dense"] == "Dense" and model.get_layer("dense").units == 8
    if family == "plain":
        assert not any(name.endswith(("_add", "_proj")) for name in kinds)
    else:  # a shortcut in every block, projected where the width changes (all three here)
        assert [kinds.get(f"block{b}_add") for b in (1, 2, 3)] == ["Add"] * 3
        assert [kinds.get(f"block{b}_proj") for b in (1, 2, 3)] == ["Conv2D"] * 3
        second = "SeparableConv2D" if family == "separable" else "Conv2D"
        assert kinds["block1_conv2"] == kinds["block2_conv"] == kinds["block3_conv2"] == second

    images, _ = pictures(12)
    titles = feature_maps_png(model, [(images[0], "a")], tmp_path / "maps.png")
    assert [t.split()[:2] for t in titles] == [
        ["block1_act", "16x16x4"],
        ["block2_act", "8x8x6"],
        ["block3_act", "4x4x9"],
    ]
    assert filters_png(model, tmp_path / "filters.png") == 4

    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    expected = predict_proba(model, images)
    np.testing.assert_allclose(predict_proba(loaded, images), expected, atol=1e-6)
    model.export(str(tmp_path / "saved"), format="tf_saved_model", verbose=False)
    served = np.asarray(
        keras.layers.TFSMLayer(str(tmp_path / "saved"), call_endpoint="serve")(
            images.astype("float32")
        )
    )
    np.testing.assert_allclose(np.concatenate([1 - served, served], axis=1), expected, atol=1e-5)


def test_residual_keeps_the_input_where_the_width_does_not_change() -> None:
    model = build_model({**BASE, "block": "residual", "growth": 1.0, "filters": 3}, 2, 16)
    names = {layer.name for layer in model.layers}
    assert "block1_proj" not in names and "block2_proj" not in names  # 3 RGB -> 3, 3 -> 3


@pytest.mark.parametrize(
    "family, classes",
    [
        pytest.param("residual", 2, marks=pytest.mark.slow),
        pytest.param("separable", 3, marks=pytest.mark.slow),
        ("plain", 3),
    ],
)
def test_families_learn_with_label_smoothing_weight_decay_and_cosine(
    family: str, classes: int
) -> None:
    images, labels = pictures(160, classes=classes)
    train_split, val_split = (
        Split(images, labels, np.arange(128)),
        Split(images, labels, np.arange(128, 160)),
    )
    params = {
        **BASE,
        "block": family,
        "label_smoothing": 0.1,
        "lr_schedule": "cosine",
        "optimizer": "adamw",
        "weight_decay": 1e-3,
        "conv_blocks": 2,
    }
    result = train(
        params, train_split, num_classes=classes, epochs=5, val_split=val_split, augment=False
    )
    assert result.model.loss.get_config()["label_smoothing"] == 0.1
    assert result.model.optimizer.weight_decay == pytest.approx(1e-3)
    report = evaluate(result.model, val_split, [str(c) for c in range(classes)])
    assert report["accuracy"] >= 0.65, result.history  # chance: 0.5 and 0.33
    # smoothed one-hot labels (3 classes) still give Keras' accuracy the class, not a blur
    assert report["accuracy"] == pytest.approx(result.history["val_accuracy"][-1], abs=1e-6)


def test_binary_label_smoothing_pulls_targets_towards_one_half() -> None:
    """The two-class head is one sigmoid: smoothing 0.2 makes 0.9 the best answer for a 1."""
    loss = make_loss(2, 0.2)
    y = np.ones((1, 1), "float32")
    at = {p: float(loss(y, np.full((1, 1), p, "float32"))) for p in (0.8, 0.9, 0.999)}
    assert at[0.9] < at[0.8] and at[0.9] < at[0.999]
    plain = make_loss(2)
    assert float(plain(y, np.full((1, 1), 0.999, "float32"))) < float(
        plain(y, np.full((1, 1), 0.9, "float32"))
    )


def test_cosine_schedule_warms_up_then_ends_with_the_epochs() -> None:
    assert learning_rate({"learning_rate": 1e-3}, steps_per_epoch=10, epochs=5) == 1e-3
    schedule = learning_rate({"learning_rate": 1e-3, "lr_schedule": "cosine"}, 10, 20)
    at = {step: float(schedule(step)) for step in (0, 10, 105, 200)}
    assert at[0] == pytest.approx(1e-4) and at[10] == pytest.approx(1e-3)  # one epoch of warm-up
    assert at[105] == pytest.approx(5e-4, rel=0.01) and at[200] == pytest.approx(0.0, abs=1e-9)
    short = learning_rate({"learning_rate": 1e-3, "lr_schedule": "cosine"}, 10, 2)
    assert float(short(2)) == pytest.approx(1e-3)  # warm-up capped at a tenth of the run


@pytest.mark.slow
def test_retraining_can_stop_early_on_the_trials_schedule() -> None:
    """The export retrains a trial to its best epoch of the schedule the trial had."""
    images, labels = pictures(32)
    split = Split(images, labels, np.arange(32))
    params = {**BASE, "conv_blocks": 1, "lr_schedule": "cosine", "batch_size": 16}  # 2 steps/epoch
    ended = train(params, split, num_classes=2, epochs=2)
    halfway = train(params, split, num_classes=2, epochs=2, schedule_epochs=20)
    assert float(keras.ops.convert_to_numpy(ended.model.optimizer.learning_rate)) == pytest.approx(
        0, abs=1e-6
    )
    assert float(keras.ops.convert_to_numpy(halfway.model.optimizer.learning_rate)) > 2e-3


def test_flip_averaging_is_the_mean_over_the_mirror_image() -> None:
    images, _ = pictures(6)
    model = build_model({**BASE, "block": "residual"}, 3, 16)
    mirrored = images[:, :, ::-1]
    np.testing.assert_allclose(
        predict_proba(model, images, tta=True),
        (predict_proba(model, images) + predict_proba(model, mirrored)) / 2,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        predict_proba(model, images, tta=True), predict_proba(model, mirrored, tta=True), atol=1e-6
    )
