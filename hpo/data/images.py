"""The single image preprocessing step, shared by the decode cache and ``hpo predict``.

Training and prediction must see pixels prepared the same way, so there is exactly one
function that turns a file (or uploaded bytes) into a uint8 RGB array.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from hpo.errors import first_line

# Pillow refuses images above 2 * MAX_IMAGE_PIXELS as "decompression bombs". Real photo
# collections contain panoramas and scans far above the 89-megapixel default, and JPEGs are
# decoded in draft mode (1/8 scale) anyway, so allow up to ~1 gigapixel; beyond that the
# file is reported as unreadable instead of exhausting memory.
MAX_PIXELS = 1 << 29
# The sides images are decoded to: below 16 px four conv blocks have nothing left to pool;
# above 1024 px one decoded image is 3 MiB and a cache of 25k images 75 GiB.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 1024

# Modes with an alpha channel (or a palette that may carry one) are composited on white, the
# way a browser shows them: a transparent background must not turn into black.
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


_limit_lock = threading.Lock()
_limit_users = 0
_limit_saved: int | None = None


@contextmanager
def pixel_limit() -> Iterator[None]:
    """Pillow's bomb limit raised to ``MAX_PIXELS`` while hpo decodes, as it was otherwise.

    Pillow reads the limit from a module global and takes no per-call one, so it is raised
    only while at least one decode runs (decodes run in threads, hence the count) and put
    back after the last: importing or using hpo leaves the caller's setting alone. A caller
    who switched the check off (``None``) keeps it off."""
    global _limit_users, _limit_saved
    with _limit_lock:
        if _limit_users == 0:
            _limit_saved = Image.MAX_IMAGE_PIXELS
            if _limit_saved is not None:
                Image.MAX_IMAGE_PIXELS = max(_limit_saved, MAX_PIXELS)
        _limit_users += 1
    try:
        yield
    finally:
        with _limit_lock:
            _limit_users -= 1
            if _limit_users == 0:
                Image.MAX_IMAGE_PIXELS = _limit_saved


class UnreadableImage(Exception):
    """A file that is not a decodable image; ``reason`` says why, in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_image(source: str | Path | bytes, image_size: int) -> np.ndarray:
    """Decode any image Pillow reads into a uint8 (S, S, 3) RGB array, squashed to S x S.

    Raises ``UnreadableImage`` for empty, truncated, unsupported or non-image input; never
    anything else for bad bytes, because one broken file must not stop a 25k-image build.
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if not data:
        raise UnreadableImage("empty file (0 bytes)")
    # Pillow's format plugins raise many exception types on malformed input (OSError,
    # SyntaxError, struct.error, ValueError, EOFError, DecompressionBombError, ...).
    try:
        with warnings.catch_warnings(), pixel_limit():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                rgb = _to_rgb(_load_oriented(im, image_size))
                rgb = rgb.resize(
                    (image_size, image_size), Image.Resampling.LANCZOS, reducing_gap=3.0
                )
                return np.array(rgb, dtype=np.uint8)
    except Image.UnidentifiedImageError:
        raise UnreadableImage("not an image (unrecognized format)") from None
    except Exception as exc:  # noqa: BLE001 - see comment above the try
        msg = first_line(exc)
        if "truncated" in msg:
            raise UnreadableImage(f"truncated image: {msg}") from None
        raise UnreadableImage(f"cannot decode: {msg}") from None


def _load_oriented(im: Image.Image, image_size: int) -> Image.Image:
    """Fully decode (JPEG at reduced scale when it is much larger) and apply EXIF rotation."""
    if im.format == "JPEG":
        # DCT-domain downscaling: a 6000x4000 photo decodes 8x faster into 1/64 the memory.
        im.draft(im.mode, (image_size, image_size))
    # Only the first frame of animated GIF/WebP/TIFF is used.
    im.load()
    try:
        ImageOps.exif_transpose(im, in_place=True)  # in place: no copy of every image
    except Exception:  # noqa: BLE001 - corrupt EXIF must not make a good picture unreadable
        pass
    return im


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: alpha on white, 16-bit/float scaled, CMYK/L converted."""
    mode = im.mode
    if mode == "RGB":
        return im  # most photos: skip a full copy
    if mode == "P" and "transparency" in im.info:
        mode, im = "RGBA", im.convert("RGBA")
    if mode in _ALPHA_MODES:
        rgba = im if im.mode == "RGBA" else im.convert("RGBA")  # convert() always copies
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_high_depth_to_uint8(np.asarray(im), mode), "L").convert("RGB")
    return im.convert("RGB")


def _high_depth_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Map 16/32-bit integer or float pixels to 0..255 (Pillow's own convert clips instead)."""
    values = arr.astype(np.float64)
    peak = float(values.max()) if values.size else 0.0
    if mode == "F" and peak <= 1.0:
        scale = 255.0  # float images in 0..1
    elif peak > 255:
        scale = 255.0 / 65535.0  # 16-bit data, whatever container mode holds it
    else:
        scale = 1.0  # 8-bit data stored in a wider mode
    return np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
