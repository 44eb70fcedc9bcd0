"""Image files with the faults real downloads have but our shared data lacks, made in the test."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

RED, BLUE = (220, 20, 20), (20, 20, 220)


def encode(im: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def noisy_jpeg(seed: int = 0, size: int = 48) -> bytes:
    """A photo-like JPEG (noise compresses badly, so cutting it really truncates data)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), quality=90)


def two_halves(
    size: tuple[int, int],
    first: tuple[int, int, int],
    second: tuple[int, int, int],
    vertical_split: bool = True,
) -> Image.Image:
    """Left/right (or top/bottom) halves in two colours, to see where pixels end up."""
    im = Image.new("RGB", size, second)
    w, h = size
    im.paste(first, (0, 0, w // 2, h) if vertical_split else (0, 0, w, h // 2))
    return im


def rgba_png() -> bytes:
    """Left half fully transparent black, right half opaque blue."""
    im = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    im.paste((*BLUE, 255), (20, 0, 40, 40))
    return encode(im, "PNG")


def palette_png_with_transparency() -> bytes:
    """Palette image whose index 0 (black) is transparent on the left half."""
    im = Image.new("P", (40, 40), 0)
    im.putpalette([0, 0, 0, *BLUE] + [0] * 762)
    im.paste(1, (20, 0, 40, 40))
    return encode(im, "PNG", transparency=0)


def gray16_png() -> bytes:
    """16-bit grayscale: left half 0, right half 32768 (mid gray, not white)."""
    pixels = np.zeros((40, 40), dtype=np.uint16)
    pixels[:, 20:] = 32768
    return encode(Image.fromarray(pixels), "PNG")


def cmyk_jpeg() -> bytes:
    return encode(Image.new("CMYK", (40, 40), (0, 255, 255, 0)))  # pure red in CMYK


def exif_rotated_jpeg() -> bytes:
    """Stored left red / right blue, with EXIF orientation 6 (display rotated 90 deg clockwise),
    so a viewer shows red on top and blue at the bottom."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(two_halves((64, 32), RED, BLUE), quality=95, exif=exif.tobytes())


def write_faulty_class(folder: Path) -> dict[str, set[str]]:
    """Fill ``folder`` with every fault; return which names must decode, fail, or be ignored."""
    folder.mkdir(parents=True, exist_ok=True)
    good = {
        "rgba.png": rgba_png(),
        "palette.png": palette_png_with_transparency(),
        "gray16.png": gray16_png(),
        "cmyk.jpg": cmyk_jpeg(),
        "rotated.jpg": exif_rotated_jpeg(),
        "junk after end.jpg": noisy_jpeg(1) + b"\x00garbage after EOI",
        "ünïcode 猫 photo.jpeg": noisy_jpeg(2),
    }
    bad = {
        "empty.jpg": b"",
        "truncated.jpg": noisy_jpeg(3)[:1500],
        "photoshop.jpg": b"8BPS" + os.urandom(200),
        "notes.jpg": b"this is a text file, not a picture\n",
    }
    ignored = {
        ".DS_Store": b"\x00\x00\x00\x01Bud1",
        "Thumbs.db": b"\xd0\xcf\x11\xe0junk",
        "desktop.ini": b"[.ShellClassInfo]\n",
        "._rotated.jpg": b"\x00\x05\x16\x07",
    }
    for name, data in {**good, **bad, **ignored}.items():
        (folder / name).write_bytes(data)
    return {"good": set(good), "bad": set(bad), "ignored": set(ignored)}


def link_images(sources: list[Path], folder: Path) -> None:
    """Symlink real shared images into a layout built in a temp dir (never copied into git)."""
    folder.mkdir(parents=True, exist_ok=True)
    for src in sources:
        (folder / src.name).symlink_to(src)
