"""Ensembles of a study's trials: which members (selected on validation) and the one Keras
model that averages them.

Selection is greedy forward selection with replacement (Caruana et al., "Ensemble Selection
from Libraries of Models", ICML 2004) on the validation probabilities each trial stored at
its scoring epoch (:mod:`hpo.predictions`): start from nothing, at each step add the
candidate whose addition gives the best validation accuracy of the averaged probabilities
(ties: the lower validation log-loss, then the better-ranked trial), a candidate may be
added again, and a member's weight is how often it was added. No test image is read.

The combined model is built from built-in layers only (each member a nested functional
model, its output scaled by ``Rescaling(weight)``, the scaled outputs summed by ``Add``), so
``model.keras`` still loads with ``safe_mode=True``, the SavedModel serves, and its output
has the members' head format (one sigmoid unit for two classes, else a softmax).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hpo.errors import HpoError

if TYPE_CHECKING:
    import keras

AUTO = "auto"
MEMBER_NAME = "member{index}"  # a member's nested model in the combined model
WEIGHT_NAME = "weight{index}"  # the Rescaling layer that weights its output
SUM_NAME = "weighted_sum"


@dataclass(frozen=True)
class Selection:
    """The outcome of :func:`select`: ``picks`` (candidate indices, one per step) and the
    validation accuracy after each step."""

    picks: tuple[int, ...]
    step_accuracy: tuple[float, ...]

    @property
    def members(self) -> list[int]:
        """The distinct candidates picked, in the order first picked."""
        return list(dict.fromkeys(self.picks))

    @property
    def counts(self) -> list[int]:
        return [self.picks.count(member) for member in self.members]

    @property
    def weights(self) -> list[float]:
        """Each member's share of the average: its selection count over the steps."""
        return [count / len(self.picks) for count in self.counts]


@dataclass(frozen=True)
class EnsembleRequest:
    """``--ensemble``: ``size`` selection steps, or None for ``auto`` (stop when the
    validation accuracy stops rising)."""

    size: int | None

    @classmethod
    def parse(cls, value: str) -> EnsembleRequest:
        """A positive number or ``auto``; anything else is a one-line error."""
        if value.strip().lower() == AUTO:
            return cls(None)
        try:
            size = int(value)
        except ValueError:
            raise HpoError(
                f"--ensemble takes a number of members or '{AUTO}', not '{value}'"
            ) from None
        if size < 1:
            raise HpoError(f"--ensemble must be at least 1 (or '{AUTO}'), not {size}")
        return cls(size)

    def describe(self) -> str:
        return AUTO if self.size is None else str(self.size)


def select(probs: Sequence[np.ndarray], labels: np.ndarray, size: int | None) -> Selection:
    """Greedy selection with replacement over ``probs`` (one (images, classes) array per
    candidate, best-ranked first) against the validation ``labels``: ``size`` steps, or with
    ``size=None`` until a step no longer raises the validation accuracy (at most one step
    per candidate)."""
    if not probs:
        raise HpoError("no candidates to select an ensemble from")
    stack = np.stack([np.asarray(p, dtype="float64") for p in probs])  # (C, N, K)
    rows = np.arange(len(labels))
    total = np.zeros(stack.shape[1:])
    picks: list[int] = []
    accuracies: list[float] = []
    for step in range(1, (size or len(probs)) + 1):
        mixed = (total[None] + stack) / step  # every candidate added to the current sum
        accuracy = (mixed.argmax(axis=2) == labels[None]).mean(axis=1)
        log_loss = -np.log(np.clip(mixed[:, rows, labels], 1e-7, 1.0)).mean(axis=1)
        best = min(range(len(probs)), key=lambda c: (-accuracy[c], log_loss[c], c))
        if size is None and accuracies and accuracy[best] <= accuracies[-1]:
            break
        picks.append(best)
        accuracies.append(float(accuracy[best]))
        total += stack[best]
    return Selection(tuple(picks), tuple(accuracies))


def combine(members: Sequence[keras.Model], weights: Sequence[float]) -> keras.Model:
    """One model whose output is the ``weights``-weighted sum of the ``members``' outputs
    (weights summing to 1: their weighted average), from built-in layers only. A selection
    that picked one trial only is that trial's model, shipped as it is: nothing to average,
    and a wrapper would only add inference time."""
    import keras

    if len(members) != len(weights) or not members:
        raise ValueError("one weight per member, at least one member")
    if len(members) == 1:
        return members[0]
    inputs = keras.Input(shape=members[0].input_shape[1:], name="image")
    scaled = []
    for index, (member, weight) in enumerate(zip(members, weights, strict=True)):
        member.name = MEMBER_NAME.format(index=index)  # unique names inside the combined model
        output = member(inputs)
        scaled.append(
            keras.layers.Rescaling(float(weight), name=WEIGHT_NAME.format(index=index))(output)
        )
    return keras.Model(inputs, keras.layers.Add(name=SUM_NAME)(scaled), name="ensemble")


def member_weights(model: keras.Model) -> list[tuple[keras.Model, float]]:
    """The (member model, weight) pairs of a model :func:`combine` built; [] for one model."""
    found: list[tuple[keras.Model, float]] = []
    index = 0
    while True:
        try:
            member = model.get_layer(MEMBER_NAME.format(index=index))
            weight = model.get_layer(WEIGHT_NAME.format(index=index))
        except ValueError:
            return found
        found.append((member, float(weight.scale)))
        index += 1


def heaviest_member(model: keras.Model) -> tuple[int, keras.Model, float] | None:
    """(index, member, weight) of an ensemble's heaviest member (the first on ties); None
    for a single model."""
    members = member_weights(model)
    if not members:
        return None
    index = heaviest([weight for _, weight in members])
    return index, members[index][0], members[index][1]


def heaviest(weights: Sequence[float]) -> int:
    """The index of the largest weight, the first on ties: the member a bundle is named
    after and explained by."""
    return max(range(len(weights)), key=lambda i: (weights[i], -i))
