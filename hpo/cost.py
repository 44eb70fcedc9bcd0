"""What a configuration costs to run once trained, measured before it trains, and the
deployment budget (``--max-latency-ms``, ``--max-params``) it is held to.

A CNN's inference cost depends on its architecture and image size, not on its weights, so
the cost of a configuration is known before its first epoch: build the model the export
ships (:func:`hpo.model.build_model` without augmentation, the graph ``model.onnx`` holds),
then measure

- **latency**: the median of timed forward passes at batch 1 on this machine's CPU, on the
  path a deployment takes: ONNX Runtime on the exported ``model.onnx``, one intra-op thread
  (a per-core number, steady while other processes share the CPU). Without the onnx extra,
  Keras' compiled ``predict_on_batch`` (a traced function, not the eager call, whose
  per-layer Python overhead would dominate the number); the runtime is recorded beside it;
- **parameters**: ``count_params()`` (what memory and the download size follow);
- **saved size**: the bytes of ``model.keras`` as the bundle writes it.

Measurements are cached per (architecture, classes, image size, runtime, machine), in the
process and under the decode cache folder, so a configuration seen before costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hpo import onnx_runtime
from hpo.errors import HpoError
from hpo.space import INFERENCE_KEYS, SearchSpace

COST_VERSION = 1  # bump when the way cost is measured changes: cached costs are then stale
WARMUP_RUNS = 10
MIN_RUNS = 50
MAX_RUNS = 1000
TIMED_SECONDS = 0.5  # timed runs go on until this much time has passed (at least MIN_RUNS)
KERAS_RUNTIME = "keras-compiled"

_MEMORY: dict[str, Cost] = {}


@dataclass(frozen=True)
class Cost:
    """One configuration's inference cost on this machine."""

    latency_ms: float  # median forward pass at batch 1
    spread_ms: float  # interquartile range of the timed runs
    runs: int
    params: int
    saved_bytes: int
    runtime: str  # onnxruntime or keras-compiled
    seconds: float = 0.0  # what measuring it took here (0 when it came from the cache)


@dataclass(frozen=True)
class Budget:
    """What a deployment allows; None: no limit. A configuration over it never trains."""

    max_latency_ms: float | None = None
    max_params: int | None = None

    def __post_init__(self) -> None:
        for name, value in (
            ("--max-latency-ms", self.max_latency_ms),
            ("--max-params", self.max_params),
        ):
            if value is not None and not value > 0:
                raise HpoError(f"{name} must be a positive number, got {value:g}")

    @property
    def active(self) -> bool:
        return self.max_latency_ms is not None or self.max_params is not None

    def excess(self, cost: Cost) -> dict[str, float]:
        """How far ``cost`` is over each limit, as a fraction of it (<= 0: within it), named
        as Optuna constraints (``Trial.set_constraint``: a positive value is a violation).
        Relative, because TPE ranks infeasible trials by the sum of their violations: in
        milliseconds and parameter counts, the count would drown the latency."""
        excess = {}
        if self.max_latency_ms is not None:
            excess["latency_ms"] = cost.latency_ms / self.max_latency_ms - 1.0
        if self.max_params is not None:
            excess["params"] = cost.params / self.max_params - 1.0
        return excess

    def violation(self, cost: Cost) -> str:
        """Why ``cost`` is over budget, or "" when it is within it."""
        over = []
        if self.max_latency_ms is not None and cost.latency_ms > self.max_latency_ms:
            over.append(f"latency {cost.latency_ms:.3g} ms > {self.max_latency_ms:g} ms")
        if self.max_params is not None and cost.params > self.max_params:
            over.append(f"{cost.params:,} parameters > {self.max_params:,}")
        return ", ".join(over)

    def describe(self) -> str:
        parts = []
        if self.max_latency_ms is not None:
            parts.append(f"latency <= {self.max_latency_ms:g} ms")
        if self.max_params is not None:
            parts.append(f"parameters <= {self.max_params:,}")
        return " and ".join(parts) or "none"


def latency_runtime() -> str:
    """The runtime latencies are measured on here: ONNX Runtime when the onnx extra is
    installed, else Keras' compiled predict function."""
    return onnx_runtime.RUNTIME if onnx_runtime.available() else KERAS_RUNTIME


def measure_cost(params: Mapping[str, Any], num_classes: int, image_size: int) -> Cost:
    """The inference cost of ``params`` (only :data:`hpo.space.INFERENCE_KEYS` matter) at
    ``image_size`` for ``num_classes``; cached, so asking twice costs nothing."""
    cost = cached_cost(params, num_classes, image_size)
    if cost is not None:
        return cost
    runtime = latency_runtime()
    architecture = {k: params[k] for k in INFERENCE_KEYS if k in params}
    key = _key(architecture, num_classes, image_size, runtime)
    started = time.monotonic()
    cost = _measure(architecture, num_classes, image_size, runtime)
    cost = replace(cost, seconds=round(time.monotonic() - started, 2))
    _write_cache(_cache_file(key), cost)
    _MEMORY[key] = replace(cost, seconds=0.0)
    return cost


def cached_cost(params: Mapping[str, Any], num_classes: int, image_size: int) -> Cost | None:
    """What :func:`measure_cost` would return when it is cached here, else None; builds
    no model, so a process that has not loaded the backend can ask."""
    architecture = {k: params[k] for k in INFERENCE_KEYS if k in params}
    key = _key(architecture, num_classes, image_size, latency_runtime())
    if key not in _MEMORY:
        try:
            text = _cache_file(key).read_text(encoding="utf-8")
            _MEMORY[key] = Cost(**{**json.loads(text), "seconds": 0.0})
        except (OSError, ValueError, TypeError):
            return None
    return _MEMORY[key]


def cheapest_points(space: SearchSpace) -> list[dict[str, Any]]:
    """The candidates for the cheapest configuration of ``space``: every combination of
    the inference parameters' non-numeric choices (block family, activation), each at the
    smallest value of every numeric one (fewer blocks, filters, growth or dense units never
    cost more)."""
    grid: list[dict[str, Any]] = [{}]
    for name in INFERENCE_KEYS:
        param = space.params.get(name)
        if param is not None:
            values = _cheapest_values(param.domain, param.value)
            grid = [{**point, name: value} for point in grid for value in values]
    return grid


def cheapest_costs(space: SearchSpace, num_classes: int) -> list[tuple[dict[str, Any], Cost]]:
    """:func:`cheapest_points` with their costs, cheapest first."""
    points = cheapest_points(space)
    costs = [(point, measure_cost(point, num_classes, space.image_size)) for point in points]
    return sorted(costs, key=lambda pc: (pc[1].latency_ms, pc[1].params))


def check_reachable(budget: Budget, space: SearchSpace, num_classes: int) -> Cost:
    """Refuse, before any training, a budget that no configuration of ``space`` meets,
    naming the cheapest configuration's cost; returns that cost."""
    candidates = cheapest_costs(space, num_classes)
    point, cheapest = candidates[0]
    if any(not budget.violation(cost) for _, cost in candidates):
        return cheapest
    shown = ", ".join(f"{k}={v}" for k, v in point.items())
    raise HpoError(
        f"no configuration of the space meets the budget ({budget.describe()}): the "
        f"cheapest ({shown}) runs in {cheapest.latency_ms:.3g} ms with "
        f"{cheapest.params:,} parameters at {space.image_size}px ({cheapest.runtime})"
    )


def _cheapest_values(domain: Any, fixed: Any) -> list[Any]:
    if domain is None:
        return [fixed]
    if isinstance(domain, FloatDistribution | IntDistribution):
        return [domain.low]
    assert isinstance(domain, CategoricalDistribution)
    choices = list(domain.choices)
    numbers = [c for c in choices if isinstance(c, int | float) and not isinstance(c, bool)]
    return [min(numbers)] if len(numbers) == len(choices) else choices


def _measure(
    architecture: Mapping[str, Any], num_classes: int, image_size: int, runtime: str
) -> Cost:
    from hpo.model import build_model

    model = build_model(
        {"l2": 0.0, "dropout": 0.0, **architecture}, num_classes, image_size, augment=False
    )
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1, image_size, image_size, 3)).astype("float32")
    model(image)
    with tempfile.TemporaryDirectory(prefix="hpo-cost-") as tmp:
        saved = Path(tmp) / "model.keras"
        model.save(saved)
        forward: Callable[[], Any]
        if runtime == onnx_runtime.RUNTIME:
            onnx_file = Path(tmp) / "model.onnx"
            onnx_runtime.export(model, onnx_file)
            session = onnx_runtime.OnnxModel(onnx_file, threads=1)
            forward = lambda: session.predict_on_batch(image)  # noqa: E731
        else:
            forward = lambda: model.predict_on_batch(image)  # noqa: E731
        latency, spread, runs = time_forward(forward)
        return Cost(
            latency_ms=round(latency, 4),
            spread_ms=round(spread, 4),
            runs=runs,
            params=int(model.count_params()),
            saved_bytes=saved.stat().st_size,
            runtime=runtime,
        )


LATENCY_BATCHES = (1, 32)  # the batch sizes of a bundle's latency table


def deployment_latencies(
    model: Any, onnx_file: Path | None, image_size: int
) -> dict[str, dict[str, float]]:
    """Milliseconds per image on this machine, per runtime (Keras' compiled predict,
    ONNX Runtime on one thread as in :func:`measure_cost`: ONNX Runtime's default thread
    pool spins, and on a shared CPU its batch-32 times then vary by 2-3x run to run) and
    batch size, for a bundle's model card."""
    runtimes: dict[str, Any] = {"keras": model}
    if onnx_file is not None:
        runtimes["onnxruntime"] = onnx_runtime.OnnxModel(onnx_file, threads=1)
    rng = np.random.default_rng(0)
    table: dict[str, dict[str, float]] = {}
    for name, runner in runtimes.items():
        table[name] = {}
        for batch in LATENCY_BATCHES:
            images = rng.integers(0, 256, (batch, image_size, image_size, 3)).astype("float32")
            median, _, _ = time_forward(lambda: runner.predict_on_batch(images))  # noqa: B023
            table[name][str(batch)] = round(median / batch, 4)
    return table


def time_forward(forward: Callable[[], Any]) -> tuple[float, float, int]:
    """(median ms, interquartile range ms, runs) of ``forward`` after a warm-up: at least
    :data:`MIN_RUNS` runs and until :data:`TIMED_SECONDS` have passed."""
    for _ in range(WARMUP_RUNS):
        forward()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < MAX_RUNS and (
        len(times) < MIN_RUNS or time.perf_counter() - started < TIMED_SECONDS
    ):
        begin = time.perf_counter()
        forward()
        times.append((time.perf_counter() - begin) * 1000)
    quartiles = statistics.quantiles(times, n=4)
    return statistics.median(times), quartiles[2] - quartiles[0], len(times)


def _key(architecture: Mapping[str, Any], num_classes: int, image_size: int, runtime: str) -> str:
    text = json.dumps(
        [
            COST_VERSION,
            dict(sorted(architecture.items())),
            num_classes,
            image_size,
            runtime,
            platform.node(),
            platform.machine(),
            os.cpu_count(),
        ],
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _cache_file(key: str) -> Path:
    from hpo.data.cache import default_cache_dir

    return default_cache_dir() / "costs" / f"{key}.json"


def _write_cache(file: Path, cost: Cost) -> None:
    """Best effort: a read-only cache folder only means measuring again next time."""
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(cost)), encoding="utf-8")
        tmp.replace(file)
    except OSError:
        pass
