"""Group-aware splits: no patient (or slide) on both sides, stratified by class, fixed by a seed.

Crops of one slide share stain, scanner and patient; a split that puts them on both sides flatters every
score. These helpers are used by ``probe``, ``finetune cls`` and ``finetune seg``:

- :func:`group_of`: the grouping value of a row (``patient``, else ``slide``, else the image itself);
- :func:`grouped_kfold`: stratified group K-fold, optionally repeated with new shuffles;
- :func:`grouped_holdout`: one grouped, stratified train/validation split of a given share;
- :func:`stratified_fraction`: a label fraction drawn per class, never losing a class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from glomssl.errors import GlomsslError

GROUP_KEYS = ("patient", "slide")


def group_of(row: Mapping[str, Any], by: str | None = None, fallback: str = "") -> str:
    """The value grouping ``row``: column ``by`` if given, else patient, else slide, else ``fallback``.

    ``by`` naming a column the row lacks is an error (a silent per-image split would leak).
    """
    if by:
        if by not in row or row[by] in (None, ""):
            raise GlomsslError(
                f"row {row.get('path') or row.get('image') or fallback} has no {by!r} value; "
                f"add the column or choose another --group"
            )
        return str(row[by])
    for key in GROUP_KEYS:
        if row.get(key) not in (None, ""):
            return f"{key}:{row[key]}"
    return f"image:{fallback}"


def grouped_kfold(
    y: Sequence[Any] | np.ndarray,
    groups: Sequence[Any] | np.ndarray,
    folds: int,
    seed: int = 0,
    repeats: int = 1,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified group K-fold (train, test) index pairs; ``repeats`` reshuffles.

    Raises a one-line error when there are fewer groups than folds.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.asarray(y)
    g = np.asarray(groups)
    n_groups = len(np.unique(g))
    if folds < 2:
        raise GlomsslError(f"--folds {folds}: K-fold needs at least 2 folds")
    if n_groups < folds:
        raise GlomsslError(
            f"--folds {folds} needs at least {folds} groups, but the data has {n_groups}; "
            "lower --folds or add slides/patients"
        )
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for r in range(repeats):
        cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed + r)
        out.extend((np.asarray(a), np.asarray(b)) for a, b in cv.split(np.zeros(len(y)), y, g))
    return out


def grouped_holdout(
    y: Sequence[Any] | np.ndarray,
    groups: Sequence[Any] | np.ndarray,
    holdout: float = 0.25,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """One grouped, class-stratified split: (train, held-out) indices, the held-out share ~``holdout``.

    With a single group the split falls back to whole images (a warning-free degenerate case that
    callers should avoid; it is what a user with one slide can still do).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.asarray(y)
    g = np.asarray(groups)
    if not 0 < holdout < 1:
        raise GlomsslError(f"held-out share {holdout} must lie strictly between 0 and 1")
    n_groups = len(np.unique(g))
    if n_groups < 2:
        g = np.arange(len(y))
        n_groups = len(y)
    k = max(2, min(n_groups, int(round(1 / holdout))))
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    tr, te = next(iter(cv.split(np.zeros(len(y)), y, g)))
    return np.asarray(tr), np.asarray(te)


def stratified_fraction(
    y: Sequence[Any] | np.ndarray, fraction: float, seed: int = 0, min_per_class: int = 1
) -> np.ndarray:
    """Sorted indices of a class-stratified ``fraction`` of ``y`` (at least ``min_per_class`` each).

    A class with fewer than ``min_per_class`` examples is an error naming the class.
    """
    y = np.asarray(y)
    if not 0 < fraction <= 1:
        raise GlomsslError(f"--label-fraction {fraction} must lie in (0, 1]")
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for c in np.unique(y):
        ci = np.flatnonzero(y == c)
        if len(ci) < min_per_class:
            raise GlomsslError(
                f"class {str(c)!r} has {len(ci)} example(s) here, fewer than the {min_per_class} needed; "
                "raise --label-fraction or add labelled images of that class"
            )
        n = max(min_per_class, int(round(fraction * len(ci))))
        keep.extend(rng.choice(ci, size=min(n, len(ci)), replace=False).tolist())
    return np.sort(np.asarray(keep, dtype=np.int64))
