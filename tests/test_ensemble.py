"""Ensemble selection on hand-made validation probabilities, and the one-file model that
averages its members (hpo.ensemble)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hpo.ensemble import EnsembleRequest, combine, heaviest_member, member_weights, select
from hpo.errors import HpoError

LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1])


def binary(p_dog: list[float]) -> np.ndarray:
    p = np.asarray(p_dog)
    return np.stack([1 - p, p], axis=1)


# A and C are wrong on images 3 and 7 (6/8 right); C is less confident, so its log-loss is
# lower. B is wrong on images 0, 1 and 4 (5/8), but right where A and C are wrong, and
# confidently so: with either of them it gets all 8.
A = binary([0.1, 0.1, 0.1, 0.9, 0.9, 0.9, 0.9, 0.1])
B = binary([0.6, 0.6, 0.4, 0.05, 0.4, 0.6, 0.6, 0.95])
C = binary([0.2, 0.2, 0.2, 0.8, 0.8, 0.8, 0.8, 0.2])


def test_greedy_picks_the_complement_not_the_runner_up() -> None:
    first = select([A, B, C], LABELS, size=1)
    assert first.picks == (2,)  # A and C tie on accuracy; C has the lower log-loss
    assert first.step_accuracy == (0.75,)

    auto = select([A, B, C], LABELS, size=None)
    assert auto.picks == (2, 1)  # B alone is the worst, but fixes what C gets wrong
    assert auto.step_accuracy == (0.75, 1.0)  # and nothing beats 1.0: auto stops there
    assert auto.members == [2, 1] and auto.weights == [0.5, 0.5]


def test_selection_is_with_replacement() -> None:
    perfect = binary([0.1, 0.1, 0.1, 0.1, 0.9, 0.9, 0.9, 0.9])
    chosen = select([A, perfect, C], LABELS, size=3)
    assert chosen.picks == (1, 1, 1)  # adding anything else only raises the log-loss
    assert chosen.members == [1] and chosen.counts == [3] and chosen.weights == [1.0]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "--ensemble must be at least 1 (or 'auto'), not 0"),
        ("-2", "--ensemble must be at least 1 (or 'auto'), not -2"),
        ("three", "--ensemble takes a number of members or 'auto', not 'three'"),
    ],
)
def test_bad_sizes_are_one_line_errors(value: str, message: str) -> None:
    with pytest.raises(HpoError) as raised:
        EnsembleRequest.parse(value)
    assert str(raised.value) == message


def test_sizes() -> None:
    assert EnsembleRequest.parse("3").size == 3 and EnsembleRequest.parse(" AUTO").size is None
    assert EnsembleRequest.parse("auto").describe() == "auto"


def test_combined_model_averages_its_members_and_loads_safely(
    tmp_path: Path, catsdogs_dir: Path
) -> None:
    """On real images: the one-file model's output is the weighted average of its members'
    outputs, before and after a ``safe_mode=True`` round trip."""
    import keras

    from hpo.bundle import save_model
    from hpo.model import build_model
    from hpo.predict import decode_file

    files = sorted((catsdogs_dir / "test" / "cats").iterdir())[:4]
    files += sorted((catsdogs_dir / "test" / "dogs").iterdir())[:4]
    images = np.stack([decode_file(f, 16)[0] for f in files]).astype("float32")
    params = dict(
        learning_rate=3e-3,
        batch_size=16,
        l2=1e-5,
        dropout=0.1,
        activation="relu",
        filters=8,
        optimizer="adam",
    )
    members = []
    for seed, blocks in ((0, 2), (1, 3), (2, 2)):  # different initial weights and depths
        keras.utils.set_random_seed(seed)
        members.append(build_model({**params, "conv_blocks": blocks}, 2, 16, augment=False))
    weights = [0.5, 0.25, 0.25]
    alone = [np.asarray(m.predict_on_batch(images)) for m in members]
    expected = sum(w * p for w, p in zip(weights, alone, strict=True))
    assert not np.allclose(alone[0], alone[1], atol=1e-3)  # the average is not trivial

    ensemble = combine(members, weights)
    np.testing.assert_allclose(ensemble.predict_on_batch(images), expected, atol=1e-6)
    assert ensemble.count_params() == sum(m.count_params() for m in members)

    save_model(tmp_path, ensemble)  # model.keras and the SavedModel, as a bundle has them
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict_on_batch(images), expected, atol=1e-6)
    served = keras.layers.TFSMLayer(str(tmp_path / "saved_model"), call_endpoint="serve")
    np.testing.assert_allclose(np.asarray(served(images)), expected, atol=1e-5)
    assert [w for _, w in member_weights(loaded)] == weights
    index, member, weight = heaviest_member(loaded) or (None, None, None)
    assert (index, weight) == (0, 0.5) and member is not None
    assert member.get_layer("block1_conv") is not None  # explain draws a member's layers
    assert heaviest_member(members[0]) is None
    assert combine(members[:1], [1.0]) is members[0]  # one trial picked: shipped as it is
