"""Fixed, recorded train/val/test splits that never leak identical images into the test set.

Splits depend only on file contents (sha256), labels, provided splits and the seed, never on
file names or listing order, so every worker and every machine draws the same split.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from hpo.data.layouts import SPLITS
from hpo.errors import HpoError

_RANK = {split: rank for rank, split in enumerate(SPLITS)}  # train beats val beats test

DEFAULT_VAL_FRACTION = DEFAULT_TEST_FRACTION = 0.15
# Each of val and test: some images (a trial needs a validation score, the export a test
# score) and at most half; together they leave at least a tenth of the images to train on.
MIN_FRACTION, MAX_FRACTION, MAX_HELD_OUT = 0.01, 0.5, 0.9


def check_fractions(val_fraction: float, test_fraction: float, where: str = "") -> None:
    """The one rule for split fractions, for the library's arguments and spaces' [split]."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not MIN_FRACTION <= value <= MAX_FRACTION:
            raise HpoError(
                f"{where}split {name} must be in [{MIN_FRACTION}, {MAX_FRACTION}], not {value}"
            )
    if val_fraction + test_fraction >= MAX_HELD_OUT:
        raise HpoError(
            f"{where}split val_fraction + test_fraction must be below {MAX_HELD_OUT}, "
            f"not {val_fraction} + {test_fraction}"
        )


def group_by_sha(sha256: Sequence[str]) -> dict[str, list[int]]:
    """Indices of byte-identical files, grouped by their content hash."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, sha in enumerate(sha256):
        groups[sha].append(i)
    return groups


def make_splits(
    sha256: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    provided: Sequence[str | None],
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
) -> tuple[dict[str, np.ndarray], list[int]]:
    """Return ({split: sorted indices}, indices left out of every split).

    Provided splits are kept, except that a copy whose bytes also appear in an earlier split
    (train < val < test) is left out. Missing val/test splits are carved, stratified by class,
    from train (or from everything when nothing is provided). Byte-identical files move
    together and groups of more than one file are never carved into test.
    """
    groups = group_by_sha(sha256)

    assigned: dict[int, str] = {}
    excluded: list[int] = []
    given = {split for split in provided if split is not None}
    for members in groups.values():
        in_provided = {i: split for i in members if (split := provided[i]) is not None}
        first = min((_RANK[split] for split in in_provided.values()), default=None)
        for i, split in in_provided.items():
            if _RANK[split] == first:
                assigned[i] = split
            else:
                excluded.append(i)

    carve = [split for split in ("test", "val") if split not in given]
    left_out = set(excluded)
    pool = {
        i for i in range(len(sha256)) if assigned.get(i, "train") == "train" and i not in left_out
    }
    if carve and pool:
        fractions = {"val": val_fraction, "test": test_fraction}
        assigned.update(_carve(groups, pool, labels, seed, {s: fractions[s] for s in carve}))
    for i in pool:
        assigned.setdefault(i, "train")

    splits = {
        split: np.array(sorted(i for i, s in assigned.items() if s == split), dtype=np.int64)
        for split in SPLITS
    }
    return splits, sorted(excluded)


def _quota(n: int, fraction: float) -> int:
    """Files of a class to carve: rounded, but at least one when the class has three or more."""
    quota = int(n * fraction + 0.5)
    return max(quota, 1) if fraction > 0 and n >= 3 else quota


def _carve(
    groups: dict[str, list[int]],
    pool: set[int],
    labels: Sequence[int] | np.ndarray,
    seed: int,
    fractions: dict[str, float],
) -> dict[int, str]:
    """Draw val/test from ``pool`` per class; returns {index: split} for the drawn files."""
    by_class: dict[int, list[tuple[str, list[int]]]] = defaultdict(list)
    for sha, members in sorted(groups.items()):
        members = [i for i in members if i in pool]
        if members:
            by_class[labels[members[0]]].append((sha, members))

    drawn: dict[int, str] = {}
    for label, class_groups in sorted(by_class.items()):
        # One generator per class: adding images of one class never reshuffles another.
        order = np.random.default_rng([seed, label]).permutation(len(class_groups))
        remaining = [class_groups[k][1] for k in order]
        n = sum(len(members) for members in remaining)
        for split in ("test", "val"):
            if split not in fractions:
                continue
            quota, taken, kept = _quota(n, fractions[split]), 0, []
            for members in remaining:
                # Identical copies would inflate test accuracy, so only singletons go to test.
                if taken < quota and (split == "val" or len(members) == 1):
                    drawn.update(dict.fromkeys(members, split))
                    taken += len(members)
                else:
                    kept.append(members)
            remaining = kept
    return drawn
