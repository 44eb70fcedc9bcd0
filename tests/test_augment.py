"""The training-time augmentation layer: what it does to images, and that it does nothing
at inference (on the configured backend; the GPU speed is measured by bench/bench_augment.py)."""

from __future__ import annotations

import keras
import numpy as np

from hpo.augment import RandomFlipZoomShift


def images(n: int = 16, size: int = 24, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype("uint8")


def augmented(layer: RandomFlipZoomShift, x: np.ndarray) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(layer(x, training=True)))


def test_flip_alone_mirrors_about_half_the_images_and_changes_no_pixel() -> None:
    x = images()
    y = augmented(RandomFlipZoomShift(zoom=0.0, shift=0.0, seed=3), x)
    mirrored = [np.allclose(y[i], x[i, :, ::-1], atol=1e-3) for i in range(len(x))]
    kept = [np.allclose(y[i], x[i], atol=1e-3) for i in range(len(x))]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))
    assert 0 < sum(mirrored) < len(x)  # both happen in a batch of 16 (chance 2 * 2^-16 not to)


def test_shift_moves_a_dot_by_at_most_the_shift_and_zoom_keeps_flat_images_flat() -> None:
    size = 40
    dot = np.zeros((8, size, size, 3), np.uint8)
    dot[:, 20, 20] = 255
    y = augmented(RandomFlipZoomShift(zoom=0.0, shift=0.1, seed=1), dot)
    for image in y:
        row, col = np.unravel_index(np.argmax(image[..., 0]), image.shape[:2])
        assert abs(row - 20) <= 4 and min(abs(col - 20), abs(col - 19)) <= 4  # 0.1 * 40 px
    assert len({np.argmax(image[..., 0]) for image in y}) > 1  # each image its own shift

    flat = np.full((4, size, size, 3), 77, np.uint8)  # weights sum to 1, edges repeat
    np.testing.assert_allclose(augmented(RandomFlipZoomShift(seed=2), flat), 77, rtol=1e-3)


def test_inference_passes_images_through_and_the_layer_round_trips_its_config() -> None:
    x = images(4)
    layer = RandomFlipZoomShift(zoom=0.2, shift=0.05, seed=7, name="augment")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), x)
    again = RandomFlipZoomShift.from_config(layer.get_config())
    assert (again.zoom, again.shift, again.seed, again.name) == (0.2, 0.05, 7, "augment")
