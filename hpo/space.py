"""Search spaces: TOML files in ``search_spaces/`` that say what a study may sample.

A space file has four tables::

    [params]        # what the sampler chooses; a table is a range or choices, a bare value is fixed
    learning_rate = { low = 1e-4, high = 1e-2, log = true, default = 1e-3 }
    batch_size    = { choices = [16, 32, 64], default = 32 }
    optimizer     = "adam"
    block         = { choices = ["plain", "residual", "separable"] }

    [train]         # fixed settings of every trial
    epochs = 8
    image_size = 64
    augment = true
    precision = "auto"      # float32, mixed_bfloat16, mixed_float16 (auto: bf16 on a GPU that has it)
    feed = "auto"           # device, host (auto: device when the rows fit on a GPU)

    [split]         # how datasets without a provided split are divided
    val_fraction = 0.15
    test_fraction = 0.15

    [pruner]        # how losing trials are stopped early
    kind = "median"
    startup_trials = 3
    warmup_epochs = 1

``[sampler]`` and ``[pruner]`` configure the Optuna engine, ``[keras_tuner]`` the KerasTuner
engine; each engine ignores the other's tables, so one file drives both. Each
:class:`Param` maps once onto an Optuna distribution (:meth:`Param.distribution`) and onto
KerasTuner hyperparameters (:meth:`Param.declare`).

A sampled parameter's ``default`` is its value in the space's *default point*, the first
trial of hpo's default strategy (:mod:`hpo.study.strategies`); without one it is the middle
of the range (geometric with ``log``) or the first choice.

Everything is validated on load, so a typo fails before any image is decoded, with the
file and key in the message.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomllib
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from hpo.data.images import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from hpo.data.splits import (
    DEFAULT_TEST_FRACTION,
    DEFAULT_VAL_FRACTION,
    MAX_FRACTION,
    MIN_FRACTION,
    check_fractions,
)
from hpo.errors import HpoError

REPO_SPACES = Path(__file__).resolve().parents[1] / "search_spaces"

ACTIVATIONS = ("relu", "elu", "gelu", "swish", "selu", "leaky_relu", "tanh")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
PRUNERS = ("median", "hyperband", "none")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
FEEDS = ("auto", "device", "host")
# [train] keys that say how this machine runs a trial, not what the trial computes. They stay
# out of content_hash, so studies made before they existed still resume; the precision a
# study trains with is checked by its record instead (hpo.study.record), as resolved here.
RUNTIME_KEYS = ("precision", "feed", "steps_per_execution")
BLOCKS = ("plain", "residual", "separable")  # the families hpo.model builds
# The parameters hpo.model's inference graph depends on, hence its cost (hpo.cost): dropout
# is a no-op and l2 a loss term once the model is exported.
INFERENCE_KEYS = ("block", "conv_blocks", "filters", "growth", "dense_units", "activation")
SCHEDULES = ("constant", "cosine")  # the learning-rate schedules hpo.recipe makes

# name -> (value type, required, default, allowed choices or None)
_PARAMS: dict[str, tuple[type, bool, Any, tuple[str, ...] | None]] = {
    "learning_rate": (float, True, None, None),
    "batch_size": (int, True, None, None),
    "l2": (float, True, None, None),
    "dropout": (float, True, None, None),
    "conv_blocks": (int, True, None, None),
    "activation": (str, True, None, ACTIVATIONS),
    "filters": (int, False, 32, None),
    "optimizer": (str, False, "adam", OPTIMIZERS),
    "block": (str, False, "plain", BLOCKS),
    "growth": (float, False, 2.0, None),
    "dense_units": (int, False, 0, None),
    "label_smoothing": (float, False, 0.0, None),
    "weight_decay": (float, False, 0.004, None),
    "lr_schedule": (str, False, "constant", SCHEDULES),
}
# Numeric parameters not simply "positive": name -> (lowest, highest) allowed, inclusive.
# growth: widths never shrink and at most quadruple per block; dense_units 0 = no dense layer.
_LIMITS: dict[str, tuple[float, float]] = {
    "growth": (1.0, 4.0),
    "dense_units": (0, 4096),
    "label_smoothing": (0.0, 0.5),
    "weight_decay": (0.0, 1.0),
}

# table -> key -> (type, default, minimum, maximum)
_FIXED: dict[str, dict[str, tuple[type, Any, float | None, float | None]]] = {
    "train": {
        "epochs": (int, 8, 1, 10_000),
        "image_size": (int, 64, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE),
        "augment": (bool, True, None, None),
        "precision": (str, "auto", None, None),
        "feed": (str, "auto", None, None),
        "steps_per_execution": (int, 0, 0, 10_000),  # 0: chosen for the device
    },
    "split": {
        "val_fraction": (float, DEFAULT_VAL_FRACTION, MIN_FRACTION, MAX_FRACTION),
        "test_fraction": (float, DEFAULT_TEST_FRACTION, MIN_FRACTION, MAX_FRACTION),
    },
    "pruner": {
        "kind": (str, "median", None, None),
        "startup_trials": (int, 3, 0, 10_000),
        "warmup_epochs": (int, 1, 0, 10_000),
    },
    "sampler": {
        "startup_trials": (int, 5, 0, 10_000),
    },
    "keras_tuner": {
        "factor": (int, 3, 2, 100),  # hyperband: keep 1/factor per round
        "hyperband_iterations": (int, 1, 1, 1_000),  # hyperband: full sweeps over the brackets
        "initial_points": (int, 5, 1, 10_000),  # bayesian: random trials before the GP
    },
}

# Which KerasTuner tuner each [keras_tuner] key applies to: given for another tuner, it is
# an error rather than silently unused.
KERAS_TUNER_KEYS = {
    "factor": "hyperband",
    "hyperband_iterations": "hyperband",
    "initial_points": "bayesian",
}


# Text settings outside [params] and the values each takes (checked where they are used).
_FIXED_CHOICES = {"precision": PRECISIONS, "feed": FEEDS, "kind": PRUNERS}


def param_reference() -> dict[str, tuple[type, Any, str]]:
    """Each ``[params]`` key: its type, default (None: required) and allowed values, read
    from the tables files are checked against, so the docs' key reference is made from it."""
    return {
        name: (kind, None if required else default, _allowed(name, kind, choices))
        for name, (kind, required, default, choices) in _PARAMS.items()
    }


def table_reference() -> dict[str, dict[str, tuple[type, Any, str]]]:
    """The same for every other table (``[train]``, ``[split]``, ...): key -> type, default,
    allowed values."""
    return {
        table: {
            key: (kind, default, _allowed(key, kind, _FIXED_CHOICES.get(key), (low, high)))
            for key, (kind, default, low, high) in keys.items()
        }
        for table, keys in _FIXED.items()
    }


def _allowed(
    name: str,
    kind: type,
    choices: tuple[str, ...] | None,
    limits: tuple[float | None, float | None] | None = None,
) -> str:
    """The values a key takes, in words (what the parser checks)."""
    if choices:
        return ", ".join(choices)
    if kind is bool:
        return "true, false"
    if name == "dropout":
        return "0 to below 1"
    low, high = limits if limits is not None else _LIMITS.get(name, (None, None))
    if low is None or high is None:
        return "above 0"
    return f"{low:g} to {high:g}"


@dataclass(frozen=True)
class Param:
    """One hyperparameter: the Optuna distribution it is sampled from (a float or int range,
    a list of choices), or a fixed value (``domain`` None)."""

    name: str
    domain: BaseDistribution | None = None
    value: Any = None  # the fixed value
    given_default: Any = None  # a sampled parameter's ``default`` from the file, if any

    @property
    def default(self) -> Any:
        """The value in the space's default point: the given ``default``, else the middle of
        the range (geometric on a log scale) or the first choice."""
        d = self.domain
        if d is None:
            return self.value
        if self.given_default is not None:
            return self.given_default
        if isinstance(d, CategoricalDistribution):
            return d.choices[0]
        assert isinstance(d, FloatDistribution | IntDistribution)
        middle = math.sqrt(d.low * d.high) if d.log else (d.low + d.high) / 2
        if isinstance(d, IntDistribution):
            return int(middle + 0.5)  # half up: 2..3 starts at 3
        return min(max(float(f"{middle:.2g}"), d.low), d.high)  # 0.00095, not 0.000948683...

    @property
    def kind(self) -> str:
        """``"float"``, ``"int"``, ``"categorical"`` or ``"fixed"``."""
        if self.domain is None:
            return "fixed"
        if isinstance(self.domain, CategoricalDistribution):
            return "categorical"
        return "int" if isinstance(self.domain, IntDistribution) else "float"

    def sample(self, trial: Any) -> Any:
        """Ask an Optuna trial for a value (fixed values are not sampled, only recorded)."""
        d = self.domain
        if isinstance(d, FloatDistribution):
            return trial.suggest_float(self.name, d.low, d.high, log=d.log)
        if isinstance(d, IntDistribution):
            return trial.suggest_int(self.name, d.low, d.high, log=d.log)
        if isinstance(d, CategoricalDistribution):
            return trial.suggest_categorical(self.name, list(d.choices))
        return self.value

    def distribution(self) -> BaseDistribution | None:
        """The Optuna distribution :meth:`sample` draws from (None for a fixed value), for
        trials whose values another engine chose and that are recorded into a study."""
        return self.domain

    def declare(self, hp: Any) -> Any:
        """Declare the parameter on KerasTuner ``HyperParameters`` (the same range, scale or
        choices as :meth:`distribution`) and return its current value."""
        d = self.domain
        sampling = "log" if getattr(d, "log", False) else "linear"
        if isinstance(d, FloatDistribution):
            return hp.Float(self.name, d.low, d.high, sampling=sampling, default=self.default)
        if isinstance(d, IntDistribution):
            return hp.Int(self.name, d.low, d.high, sampling=sampling, default=self.default)
        if isinstance(d, CategoricalDistribution):
            return hp.Choice(self.name, list(d.choices), default=self.default)
        return hp.Fixed(self.name, self.value)

    def values(self) -> tuple[Any, ...]:
        """Every value the parameter can take where that is a finite set, else (low, high)."""
        d = self.domain
        if isinstance(d, CategoricalDistribution):
            return tuple(d.choices)
        if isinstance(d, FloatDistribution | IntDistribution):
            return (d.low, d.high)
        return (self.value,)


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space; ``source`` is the TOML text the study records."""

    path: Path
    source: str
    params: dict[str, Param]
    train: dict[str, Any]
    split: dict[str, Any]
    pruner: dict[str, Any]
    sampler: dict[str, Any] = field(default_factory=dict)
    keras_tuner: dict[str, Any] = field(default_factory=dict)
    given: frozenset[str] = frozenset()  # "table.key" settings the file states explicitly

    @property
    def epochs(self) -> int:
        return int(self.train["epochs"])

    @property
    def image_size(self) -> int:
        return int(self.train["image_size"])

    @property
    def content_hash(self) -> str:
        """Hash of what the space *means* (file text and overrides), not where it lives."""
        train = sorted((k, v) for k, v in self.train.items() if k not in RUNTIME_KEYS)
        payload = repr((self.source, train, sorted(self.split.items())))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def sample(self, trial: Any) -> dict[str, Any]:
        """The trial's full configuration: sampled and fixed parameters together."""
        return {name: param.sample(trial) for name, param in self.params.items()}

    def default_point(self) -> dict[str, Any]:
        """Each sampled parameter's :attr:`Param.default`: a configuration to try first."""
        return {name: p.default for name, p in self.params.items() if p.domain is not None}

    def check_keras_tuner(self, tuner: str) -> None:
        """Refuse ``[keras_tuner]`` settings the file gives for another tuner than ``tuner``."""
        for key, owner in KERAS_TUNER_KEYS.items():
            if f"keras_tuner.{key}" in self.given and owner != tuner:
                raise HpoError(
                    f"{self.path}: keras_tuner.{key} applies to --tuner {owner}, not {tuner}"
                )

    def with_overrides(
        self, *, epochs: int | None = None, image_size: int | None = None
    ) -> SearchSpace:
        """Command-line ``--epochs`` / ``--image-size`` win over the file, validated alike."""
        train = dict(self.train)
        for key, value in (("epochs", epochs), ("image_size", image_size)):
            if value is not None:
                kind, _, low, high = _FIXED["train"][key]
                train[key] = _check_number(f"--{key.replace('_', '-')}", value, kind, low, high)
        space = replace(self, train=train)
        _check_blocks_fit(space, "command line")
        return space


def resolve_space_path(dataset: str, space: str | Path | None = None) -> Path:
    """``--space FILE`` if given, else ``search_spaces/<dataset>.toml`` here or in the repo."""
    if space is not None:
        path = Path(space).expanduser()
        if not path.is_file():
            raise HpoError(f"search space file not found: {path}")
        return path
    for folder in (Path.cwd() / "search_spaces", REPO_SPACES):
        candidate = folder / f"{dataset}.toml"
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in REPO_SPACES.glob("*.toml"))
    raise HpoError(
        f"no search space for dataset '{dataset}': pass --space FILE "
        f"(shipped spaces: {', '.join(known)})"
    )


def load_space(dataset: str = "demo", space: str | Path | None = None) -> SearchSpace:
    """Read and validate a search-space file; every error names the file and the key."""
    path = resolve_space_path(dataset, space)
    return load_space_text(path.read_text(encoding="utf-8"), path)


def load_space_text(source: str, path: Path) -> SearchSpace:
    """Validate space TOML text; ``path`` names where it came from (a file, or a study's
    record of the space it was made with, which is how ``hpo export-best`` rebuilds it)."""
    try:
        doc = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        raise HpoError(f"{path}: not valid TOML: {exc}") from None

    unknown = set(doc) - {"params", *_FIXED}
    if unknown:
        raise HpoError(
            f"{path}: unknown table '{sorted(unknown)[0]}' (expected: params, {', '.join(_FIXED)})"
        )
    params = _parse_params(path, doc.get("params", {}))
    fixed = {table: _parse_fixed(path, table, doc.get(table, {})) for table in _FIXED}
    if fixed["pruner"]["kind"] not in PRUNERS:
        raise HpoError(
            f"{path}: pruner.kind must be one of {', '.join(PRUNERS)}, "
            f"not {fixed['pruner']['kind']!r}"
        )
    for key, allowed in (("precision", PRECISIONS), ("feed", FEEDS)):
        if fixed["train"][key] not in allowed:
            raise HpoError(
                f"{path}: train.{key} must be one of {', '.join(allowed)}, "
                f"not {fixed['train'][key]!r}"
            )
    check_fractions(fixed["split"]["val_fraction"], fixed["split"]["test_fraction"], f"{path}: ")
    given = frozenset(
        f"{table}.{key}"
        for table in _FIXED
        if isinstance(doc.get(table), Mapping)
        for key in doc[table]
    )
    space = SearchSpace(path=path, source=source, params=params, given=given, **fixed)
    _check_blocks_fit(space, str(path))
    return space


def _parse_params(path: Path, table: Mapping[str, Any]) -> dict[str, Param]:
    if not isinstance(table, Mapping):
        raise HpoError(f"{path}: 'params' must be a table")
    for name in table:
        if name not in _PARAMS:
            raise HpoError(f"{path}: unknown key 'params.{name}' (expected: {', '.join(_PARAMS)})")
    params: dict[str, Param] = {}
    for name, (kind, required, default, allowed) in _PARAMS.items():
        if name not in table:
            if required:
                raise HpoError(f"{path}: missing key 'params.{name}'")
            params[name] = Param(name, value=default)
            continue
        params[name] = _parse_param(path, name, table[name], kind, allowed)
    return params


def _parse_param(
    path: Path, name: str, spec: Any, kind: type, allowed: tuple[str, ...] | None
) -> Param:
    where = f"{path}: params.{name}"

    def check_value(value: Any) -> Any:
        ok = (
            isinstance(value, kind)
            and not isinstance(value, bool)
            or (kind is float and isinstance(value, int) and not isinstance(value, bool))
        )
        if not ok:
            raise HpoError(f"{where}: expected {kind.__name__} values, got {value!r}")
        if allowed is not None and value not in allowed:
            raise HpoError(f"{where}: {value!r} is not one of {', '.join(allowed)}")
        if name in _LIMITS and not _LIMITS[name][0] <= value <= _LIMITS[name][1]:
            low, high = _LIMITS[name]
            raise HpoError(f"{where}: must be in [{low}, {high}], got {value!r}")
        if kind is not str and value <= 0 and name not in ("dropout", *_LIMITS):
            raise HpoError(f"{where}: must be positive, got {value!r}")
        if name == "dropout" and not 0 <= value < 1:
            raise HpoError(f"{where}: must be in [0, 1), got {value!r}")
        return float(value) if kind is float else value

    if not isinstance(spec, Mapping):
        return Param(name, value=check_value(spec))
    keys = set(spec) - {"default"}
    if keys <= {"choices"} and keys:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise HpoError(f"{where}.choices: must be a non-empty list")
        domain: BaseDistribution = CategoricalDistribution([check_value(c) for c in choices])
        return Param(name, domain, given_default=_check_default(where, spec, domain, check_value))
    if {"low", "high"} <= keys <= {"low", "high", "log"}:
        if kind is str:
            raise HpoError(f"{where}: a text parameter takes 'choices', not low/high")
        low, high = check_value(spec["low"]), check_value(spec["high"])
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise HpoError(f"{where}.log: must be true or false")
        if low > high:
            raise HpoError(f"{where}: low ({low}) is above high ({high})")
        if log and low <= 0:
            raise HpoError(f"{where}: low must be > 0 with log = true")
        domain = (FloatDistribution if kind is float else IntDistribution)(low, high, log=log)
        return Param(name, domain, given_default=_check_default(where, spec, domain, check_value))
    extra = sorted(keys - {"low", "high", "log", "choices"})
    if extra:
        raise HpoError(
            f"{where}: unknown key '{extra[0]}' (use low/high/log or choices, and default)"
        )
    raise HpoError(f"{where}: give either low and high, or choices")


def _check_default(
    where: str, spec: Mapping[str, Any], domain: BaseDistribution, check_value: Any
) -> Any:
    """The parameter's ``default`` (None when not given), which must be one of its values."""
    if "default" not in spec:
        return None
    value = check_value(spec["default"])
    if isinstance(domain, CategoricalDistribution):
        inside = value in domain.choices
    else:
        assert isinstance(domain, FloatDistribution | IntDistribution)
        inside = domain.low <= value <= domain.high
    if not inside:
        raise HpoError(f"{where}.default: {value!r} is not in the parameter's range or choices")
    return value


def _check_number(
    where: str, value: Any, kind: type[Any], low: float | None, high: float | None
) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise HpoError(f"{where}: expected {kind.__name__}, got {value!r}")
    if low is not None and value < low or high is not None and value > high:
        raise HpoError(f"{where}: {value!r} is outside [{low}, {high}]")
    return value


def _parse_fixed(path: Path, table: str, values: Any) -> dict[str, Any]:
    schema = _FIXED[table]
    if not isinstance(values, Mapping):
        raise HpoError(f"{path}: '{table}' must be a table")
    for key in values:
        if key not in schema:
            raise HpoError(f"{path}: unknown key '{table}.{key}' (expected: {', '.join(schema)})")
    return {
        key: _check_number(f"{path}: {table}.{key}", values.get(key, default), kind, lo, hi)
        for key, (kind, default, lo, hi) in schema.items()
    }


def _check_blocks_fit(space: SearchSpace, where: str) -> None:
    """Each conv block halves the image; refuse spaces whose deepest model has no pixels left."""
    most = max(int(v) for v in space.params["conv_blocks"].values())
    if 2**most > space.image_size:
        raise HpoError(
            f"{where}: {most} conv blocks need images of at least {2**most}px, "
            f"image_size is {space.image_size}"
        )
