"""The CNN and the one training function shared by search and export."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from hpo.data import Split
from hpo.metrics import classification_report, matrix_report
from hpo.model import build_model, conv_block_outputs
from hpo.training import TrainResult, evaluate, predict_proba, train

PARAMS = dict(
    learning_rate=3e-3,
    batch_size=16,
    l2=1e-5,
    dropout=0.1,
    conv_blocks=2,
    activation="relu",
    filters=8,
    optimizer="adam",
)


def bright_vs_dark(n: int = 96, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A task any working CNN learns in a couple of epochs: dark images vs bright ones."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    base = np.where(labels[:, None, None, None] == 1, 190, 60)
    images = np.clip(base + rng.normal(0, 25, (n, size, size, 3)), 0, 255).astype(np.uint8)
    return images, labels


def test_heads_match_the_number_of_classes() -> None:
    binary = build_model(PARAMS, num_classes=2, image_size=16)
    multi = build_model(PARAMS, num_classes=5, image_size=16)
    assert binary.output_shape == (None, 1) and binary.layers[-1].activation.__name__ == "sigmoid"
    assert multi.output_shape == (None, 5) and multi.layers[-1].activation.__name__ == "softmax"
    assert conv_block_outputs(build_model({**PARAMS, "conv_blocks": 3}, 2, 16)) == [
        "block1_act",
        "block2_act",
        "block3_act",
    ]


def test_augmentation_is_off_at_inference() -> None:
    images, _ = bright_vs_dark(8)
    model = build_model(PARAMS, num_classes=2, image_size=16, augment=True)
    np.testing.assert_allclose(predict_proba(model, images), predict_proba(model, images))


def test_training_learns_and_reports_curves() -> None:
    images, labels = bright_vs_dark()
    train_split, val_split = (
        Split(images, labels, np.arange(64)),
        Split(images, labels, np.arange(64, 96)),
    )
    seen: list[int] = []
    result = train(
        PARAMS,
        train_split,
        num_classes=2,
        epochs=4,
        val_split=val_split,
        augment=False,
        on_epoch=lambda epoch, logs: seen.append(epoch),
    )
    assert seen == [0, 1, 2, 3]
    assert set(result.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert result.epochs_run == 4
    report = evaluate(result.model, val_split, ["dark", "bright"])
    assert report["accuracy"] >= 0.9, result.history
    # the evaluation and Keras' own val_accuracy measure the same thing
    assert report["accuracy"] == pytest.approx(result.history["val_accuracy"][-1], abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("classes", "smoothing"),
    [(2, 0.0), (3, 0.0), (3, 0.1)],  # sigmoid head; softmax with class indices; with one-hot
)
def test_fit_counts_its_last_validation_pass(classes: int, smoothing: float) -> None:
    """A trial's validation confusion matrix comes from fit's own last validation pass, and
    it is the matrix a second pass over the split with the final model gives."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (90, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, classes, 90)
    names = [f"c{i}" for i in range(classes)]
    val = Split(images, labels, np.arange(60, 90))
    result = train(
        {**PARAMS, "label_smoothing": smoothing},
        Split(images, labels, np.arange(60)),
        num_classes=classes,
        epochs=2,
        val_split=val,
        augment=False,
    )
    assert set(result.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert result.val_confusion.sum() == 30
    report = matrix_report(result.val_confusion, names)
    assert report == evaluate(result.model, val, names)
    assert report["accuracy"] == pytest.approx(result.history["val_accuracy"][-1], abs=1e-6)
    assert train(PARAMS, val, num_classes=classes, epochs=1).val_confusion is None


def test_same_seed_same_result() -> None:
    images, labels = bright_vs_dark(48)  # two classes present; the head and loss follow `classes`
    split = Split(images, labels, np.arange(48))
    first = train(PARAMS, split, num_classes=2, epochs=1, seed=7)
    second = train(PARAMS, split, num_classes=2, epochs=1, seed=7)
    assert first.history["loss"] == pytest.approx(second.history["loss"], rel=1e-5)


@pytest.mark.parametrize(
    "classes, smoothing", [(2, 0.0), pytest.param(3, 0.1, marks=pytest.mark.slow)]
)
def test_the_train_step_is_traced_once_per_fit(
    classes: int, smoothing: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On TensorFlow, a step whose first trace creates variables is traced again; train()
    creates them first, so each fit traces its train step once (about a second per trial)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("JAX and PyTorch build the training state before their first step")
    traced = []
    step = keras.Model.train_step
    monkeypatch.setattr(
        keras.Model, "train_step", lambda model, data: traced.append(1) or step(model, data)
    )
    images, labels = bright_vs_dark(48)  # two classes present; the head and loss follow `classes`
    params = {**PARAMS, "optimizer": "adamw", "label_smoothing": smoothing}
    result = train(
        params,
        Split(images, labels, np.arange(40)),
        num_classes=classes,
        epochs=2,
        val_split=Split(images, labels, np.arange(40, 48)),
    )
    assert len(traced) == 1 and len(result.history["loss"]) == 2


def test_multiclass_probabilities_sum_to_one() -> None:
    images, labels = bright_vs_dark(30)
    model = build_model(PARAMS, num_classes=3, image_size=16)
    probs = predict_proba(model, images)
    assert probs.shape == (30, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_classification_report_numbers() -> None:
    report = classification_report(
        np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), ["a", "b", "c"]
    )
    assert report["accuracy"] == pytest.approx(0.6)
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert report["per_class"]["b"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    )
    assert report["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_no_module_imports_tensorflow() -> None:
    """Only keras.* / keras.ops: the GPU machines run JAX or PyTorch and have no TensorFlow."""
    for path in sorted((Path(__file__).resolve().parents[1] / "hpo").rglob("*.py")):
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(tensorflow|jax|torch)\b|\btf\.", text, re.M), (
            path
        )


@pytest.mark.parametrize("num_classes", [2, 3])
def test_scoring_epoch_probabilities_are_fits_own_validation_outputs(num_classes: int) -> None:
    """Read from fit's validation pass (a compiled metric), they equal a second prediction
    pass over the split, rows in sorted order, for the sigmoid and the softmax head; a batch
    size that leaves a partial last batch and validation rows out of order included."""
    from hpo.predictions import validation_rows
    from hpo.validation_pass import ScoringEpochProbabilities

    images, labels = bright_vs_dark(80)
    labels = labels % num_classes
    rows = np.random.default_rng(1).permutation(np.arange(40, 80))[:27]  # 27 = 16 + 11
    val_split = Split(images, labels, rows)

    def fit(scoring: ScoringEpochProbabilities) -> TrainResult:
        train_split = Split(images, labels, np.arange(40))
        return train(
            PARAMS,
            train_split,
            num_classes=num_classes,
            epochs=1,
            val_split=val_split,
            scoring_probabilities=scoring,
        )

    scoring = ScoringEpochProbabilities()
    result = fit(scoring)
    assert scoring.probs is not None and scoring.probs.dtype == np.float16
    again = predict_proba(result.model, images[validation_rows(val_split)])
    assert scoring.probs.shape == again.shape == (27, num_classes)
    np.testing.assert_allclose(scoring.probs.astype("float32"), again, atol=1e-3)
    assert scoring.best == result.history["val_accuracy"][0]

    inherited = ScoringEpochProbabilities(best=1.1)  # a best no epoch can beat
    fit(inherited)
    assert inherited.probs is None
