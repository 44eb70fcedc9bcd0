"""Importing hpo changes nothing in the caller's process: a notebook that imports it keeps
its environment, its Optuna and logging levels and Pillow's decompression-bomb limit. The
CLI makes its process settings itself and reports errors in one line (``--debug``: all)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from tests.conftest import cli_env, run_cli

MODULES = (
    "hpo",
    "hpo.study",
    "hpo.data",
    "hpo.export",
    "hpo.predict",
    "hpo.explain",
    "hpo.bundle",
    "hpo.training",
    "hpo.status",
    "hpo.bench",
    "hpo.cli",
)

PROBE = """
import json, logging, os, sys
# The libraries hpo uses first: what they do to the process on import is theirs, not hpo's.
import keras, matplotlib, optuna, rich, sqlalchemy
from PIL import Image

def state():
    return {
        "environ": dict(os.environ),
        "optuna": optuna.logging.get_verbosity(),
        "levels": {
            name: logging.getLogger(name).level
            for name in ("", "tensorflow", "absl", "optuna", "PIL", "keras")
        },
        "max_image_pixels": Image.MAX_IMAGE_PIXELS,
    }

before = state()
for name in sys.argv[1:]:
    __import__(name)
print(json.dumps({"before": before, "after": state()}))
"""


def test_importing_hpo_sets_nothing_in_the_process() -> None:
    # Keras' numpy backend: the same hpo modules are imported, without seconds of TensorFlow.
    env = cli_env(KERAS_BACKEND="numpy")
    for name in (
        "TF_FORCE_GPU_ALLOW_GROWTH",
        "XLA_PYTHON_CLIENT_PREALLOCATE",
        "TF_CPP_MIN_LOG_LEVEL",
    ):
        env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *MODULES],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["after"] == seen["before"]


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels in a few bytes: what a bomb looks like."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def test_decompression_bombs_are_refused_without_touching_pillows_limit() -> None:
    from PIL import Image

    from hpo.data import UnreadableImage, decode_image
    from hpo.data.images import MAX_PIXELS

    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(UnreadableImage, match="decompression bomb"):
        decode_image(_png_header(40_000, 40_000), 16)  # 1.6 gigapixels: refused at the header
    # 400 megapixels: past Pillow's default refusal, within hpo's; it fails later, as truncated
    with pytest.raises(UnreadableImage) as info:
        decode_image(_png_header(20_000, 20_000), 16)
    assert 20_000 * 20_000 < 2 * MAX_PIXELS and "bomb" not in info.value.reason
    assert Image.MAX_IMAGE_PIXELS == before


def test_cli_errors_are_one_line_unless_debug(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'missing.db'}"
    quiet = run_cli("status", "--storage", storage, check=False)
    assert quiet.returncode == 2
    assert quiet.stderr.strip().splitlines() == [
        f"error: no study database at {tmp_path / 'missing.db'} (storage {storage}); "
        "pass --storage or set HPO_STORAGE"
    ]
    debug = run_cli("--debug", "status", "--storage", storage, check=False)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert "hpo.errors.HpoError: no study database" in debug.stderr


def test_out_of_memory_fails_the_trial_and_nothing_else() -> None:
    from hpo.errors import OutOfMemory, TrialFailed, out_of_memory_fails_trial

    with pytest.raises(OutOfMemory) as info, out_of_memory_fails_trial():
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert isinstance(info.value, TrialFailed)
    assert info.value.reason == (
        "out of memory (RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB)"
    )
    with pytest.raises(ZeroDivisionError), out_of_memory_fails_trial():
        _ = 1 / 0
