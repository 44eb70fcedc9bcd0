"""Which backend and accelerator the trials run on, said in one line.

A search that silently falls back to the CPU wastes a week; the first thing ``hpo run``
prints after the data is this line. It asks Keras, never a backend library, so it reads
the same on TensorFlow, JAX and PyTorch.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from importlib import metadata

from hpo.errors import HpoError

# The share of one GPU's memory this process may use, set by `--gpu-memory-fraction`; read
# back here to size the device feed and to say it on the backend line.
MEMORY_FRACTION_ENV = "HPO_GPU_MEMORY_FRACTION"
# PyTorch's allocator learned `per_process_memory_fraction` in PYTORCH_CUDA_ALLOC_CONF late in
# 2025 (pytorch#161035); an older one refuses unknown keys at CUDA start, so only releases
# from this one on get it (the first release with it is assumed, not checked on a GPU).
TORCH_FRACTION_SINCE = (2, 10)


@contextlib.contextmanager
def _native_stderr_to(path: str) -> Iterator[None]:
    """Send what C++ libraries write to fd 2 (TensorFlow's start-up chatter) to a file."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "w") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def load_backend() -> str:
    """Import Keras and its backend and return e.g.
    ``"keras 3.15.1, backend tensorflow 2.21.0 on CPU"``.

    The backend's own start-up log goes to ``$TMPDIR/hpo-backend.log`` instead of the
    terminal; the line returned says what matters in it (backend, version, devices).
    """
    log = os.path.join(tempfile.gettempdir(), "hpo-backend.log")
    with _native_stderr_to(log):
        import keras

        gpus = accelerators()
    where = (
        f"on {len(gpus)} GPU{'s' if len(gpus) > 1 else ''} ({', '.join(gpus)})"
        if gpus
        else "on CPU"
    )
    share, backend = os.environ.get(MEMORY_FRACTION_ENV), keras.backend.backend()
    if share and gpus:
        enforced = backend == "jax" or backend == "torch" and _torch_knows_fraction()
        where += f", {float(share):.0%} of GPU memory per process" + (
            ""
            if enforced
            else f" requested (not enforced: {backend} {backend_version()} "
            "has no setting for it outside its own API)"
        )
    return f"keras {keras.__version__}, backend {backend} {backend_version()} {where}"


@functools.lru_cache(maxsize=1)
def accelerators() -> list[str]:
    """Non-CPU devices, asked through Keras. Asking for "gpu" alone raises on a CPU-only
    JAX, and the torch backend has no distribution API: there the device of a fresh tensor
    ("cpu" or "cuda:0") tells where Keras puts its work."""
    import keras

    try:
        devices = keras.distribution.list_devices()
    except (AttributeError, NotImplementedError):
        devices = [str(getattr(keras.ops.zeros(1), "device", "cpu"))]
    return [d for d in devices if not d.lower().startswith("cpu")]


def backend_name() -> str:
    """The backend Keras will load, read the way Keras reads it (``KERAS_BACKEND``, else
    ``$KERAS_HOME/keras.json``, else TensorFlow) without importing Keras: a worker decides
    how its trials run before it forks the processes that import the backend."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json"), encoding="utf-8") as config:
            return str(json.load(config).get("backend") or "tensorflow")
    except (OSError, ValueError):
        return "tensorflow"


def backend_version() -> str:
    """The installed version of the backend package Keras runs on (no import of either)."""
    try:
        return metadata.version(backend_name())
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class Gpu:
    """What the mixed-precision default and the device feed need to know of one GPU."""

    name: str
    compute_capability: float | None  # 8.0 and up (Ampere, Hopper) compute bfloat16 natively
    memory_bytes: int


@functools.lru_cache(maxsize=1)
def gpus() -> tuple[Gpu, ...]:
    """The NVIDIA GPUs this process may use (``CUDA_VISIBLE_DEVICES`` respected), asked of
    ``nvidia-smi`` so that no backend library is needed; empty where there is none."""
    if shutil.which("nvidia-smi") is None:
        return ()
    try:
        out = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=index,name,compute_cap,memory.total",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return parse_gpu_query(out, os.environ.get("CUDA_VISIBLE_DEVICES"))


def parse_gpu_query(out: str, visible: str | None = None) -> tuple[Gpu, ...]:
    """The GPUs in ``nvidia-smi --query-gpu=index,name,compute_cap,memory.total
    --format=csv,noheader,nounits`` output, in ``CUDA_VISIBLE_DEVICES`` order when set."""
    found = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4 and parts[0].isdigit():
            cap = float(parts[2]) if parts[2].replace(".", "", 1).isdigit() else None
            mib = int(parts[3]) if parts[3].isdigit() else 0
            found[parts[0]] = Gpu(parts[1], cap, mib * 2**20)
    if visible is not None:
        return tuple(found[i.strip()] for i in visible.split(",") if i.strip() in found)
    return tuple(found.values())


def memory_fraction() -> float:
    """The share of each GPU this process was given (1.0 unless ``--gpu-memory-fraction``)."""
    return float(os.environ.get(MEMORY_FRACTION_ENV) or 1.0)


def limit_gpu_memory(fraction: float, environ: MutableMapping[str, str] = os.environ) -> None:
    """Let this process use at most ``fraction`` of each GPU's memory, so several workers can
    share one GPU. Must run before the backend loads: each backend reads it at start-up.

    JAX: ``XLA_PYTHON_CLIENT_MEM_FRACTION`` caps its allocator (hpo turns preallocation off,
    so it grows up to the cap). PyTorch: ``per_process_memory_fraction`` in
    ``PYTORCH_CUDA_ALLOC_CONF`` (a PyTorch new enough to know it). TensorFlow has no such
    setting outside its own API; it grows on demand (``TF_FORCE_GPU_ALLOW_GROWTH``).
    """
    if not 0 < fraction <= 1:
        raise HpoError(f"the GPU memory fraction must be in (0, 1], not {fraction}")
    environ[MEMORY_FRACTION_ENV] = f"{fraction:g}"
    environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{fraction:g}"
    if _torch_knows_fraction():
        kept = [
            part
            for part in environ.get("PYTORCH_CUDA_ALLOC_CONF", "").split(",")
            if part.strip() and part.partition(":")[0].strip() != "per_process_memory_fraction"
        ]
        environ["PYTORCH_CUDA_ALLOC_CONF"] = ",".join(
            [*kept, f"per_process_memory_fraction:{fraction:g}"]
        )


def _torch_knows_fraction() -> bool:
    try:
        version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return False
    numbers = tuple(int(n) for n in version.split("+")[0].split(".")[:2] if n.isdigit())
    return numbers >= TORCH_FRACTION_SINCE
