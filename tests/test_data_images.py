"""decode_image: every picture a user has becomes the same kind of array, or a clear reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpo.data import UnreadableImage, decode_image
from tests import data_samples as samples

S = 32


def _check_rgb(arr: np.ndarray) -> None:
    assert arr.shape == (S, S, 3) and arr.dtype == np.uint8


@pytest.mark.parametrize(
    "relpath, fmt, mode",
    [
        ("train/cats/cat.23.jpg", "BMP", "RGB"),
        ("train/cats/cat.140.jpg", "GIF", "P"),
        ("test/dogs/dog.1773.jpg", "JPEG", "L"),
        ("test/dogs/dog.1789.jpg", "JPEG", "CMYK"),
    ],
)
def test_real_misnamed_and_odd_mode_files_decode_to_rgb(
    catsdogs_dir: Path, relpath: str, fmt: str, mode: str
) -> None:
    path = catsdogs_dir / relpath
    with Image.open(path) as im:
        assert (im.format, im.mode) == (fmt, mode)  # the fault is really there
        reference = np.asarray(im.convert("RGB").resize((S, S)), dtype=np.float64)
    arr = decode_image(path, S)
    _check_rgb(arr)
    assert abs(arr.astype(np.float64).mean() - reference.mean()) < 8  # same picture, not noise
    if mode == "L":
        assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()


def test_path_and_bytes_give_identical_pixels(catsdogs_dir: Path) -> None:
    path = catsdogs_dir / "train" / "dogs" / "dog.0.jpg"
    assert np.array_equal(decode_image(path, S), decode_image(path.read_bytes(), S))


def test_transparency_is_composited_on_white() -> None:
    for data in (samples.rgba_png(), samples.palette_png_with_transparency()):
        arr = decode_image(data, S)
        _check_rgb(arr)
        assert (arr[:, :4] == 255).all()  # transparent half -> white
        assert (arr[:, -4:] == samples.BLUE).all()  # opaque half keeps its colour


def test_16bit_grayscale_is_scaled_not_clipped() -> None:
    arr = decode_image(samples.gray16_png(), S)
    _check_rgb(arr)
    assert (arr[:, :4] == 0).all()
    assert (np.abs(arr[:, -4:].astype(int) - 128) <= 1).all()  # 32768/65535 is mid gray


def test_cmyk_jpeg_becomes_rgb() -> None:
    arr = decode_image(samples.cmyk_jpeg(), S)
    _check_rgb(arr)
    assert arr[..., 0].min() > 200 and arr[..., 1:].max() < 50  # red stays red


def test_exif_orientation_is_applied() -> None:
    arr = decode_image(samples.exif_rotated_jpeg(), S).astype(int)
    top, bottom = arr[:6].reshape(-1, 3).mean(0), arr[-6:].reshape(-1, 3).mean(0)
    assert top[0] > 180 and top[2] < 60  # stored left (red) is shown on top
    assert bottom[2] > 180 and bottom[0] < 60


def test_large_jpeg_decodes_with_content_intact() -> None:
    data = samples.encode(samples.two_halves((6000, 4000), samples.RED, samples.BLUE))
    arr = decode_image(data, S).astype(int)
    assert (np.abs(arr[:, :12] - samples.RED) < 10).all()
    assert (np.abs(arr[:, -12:] - samples.BLUE) < 10).all()


def test_decompression_bomb_sized_image_decodes() -> None:
    # 182 megapixels: above the 2 x 89.5 Mpx at which Pillow refuses an image by default.
    data = samples.encode(Image.new("L", (14000, 13000), 128))
    assert (decode_image(data, S) == 128).all()


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (samples.noisy_jpeg(3)[:1500], "truncated"),
        (b"8BPS" + bytes(range(256)) * 2, ""),
        (b"just some text, named .jpg\n", "not an image"),
    ],
)
def test_unreadable_input_raises_unreadable_image_with_reason(
    tmp_path: Path, data: bytes, reason: str
) -> None:
    path = tmp_path / "broken.jpg"
    path.write_bytes(data)
    with pytest.raises(UnreadableImage) as info:
        decode_image(path, S)
    assert reason in info.value.reason and info.value.reason
