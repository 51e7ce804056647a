"""Calibration maps of the train images (METHOD.md §3.5): cross-fitted or same-train.

Maps of train images scored against a bank that contains those same images are biased low.
Cross-fitting: the images are split into ``folds`` seeded folds
(``numpy.random.default_rng(seed).permutation``, then ``numpy.array_split``); a bank built
from the other folds' patches (same coreset ratio, projection and seed) scores each held-out
fold. These banks serve calibration only; the detector's final bank uses all images.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ._progress import progress
from ._validation import check_int
from .memory_bank import MemoryBank

__all__ = ["crossfit_folds", "crossfit_maps", "fold_parts"]

#: ``score(features (B, h, w, D), bank) -> (maps (B, crop, crop) float32, score_max (B,))``
ScoreFn = Callable[[np.ndarray, MemoryBank], tuple[np.ndarray, np.ndarray]]
#: ``build(features (n, h, w, D)) -> MemoryBank``
BuildFn = Callable[[np.ndarray], MemoryBank]


def fold_parts(n: int, folds: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The seeded permutation of ``n`` train images and its ``folds`` held-out parts.

    Returns
    -------
    perm : ndarray of shape (n,), int64
    parts : list of ``folds`` ndarrays of int64
        ``numpy.array_split(perm, folds)``.
    """
    perm = np.random.default_rng(seed).permutation(n)
    return perm, np.array_split(perm, folds)


def crossfit_folds(n_images: int, folds: int, seed: int) -> np.ndarray:
    """The cross-fit fold of each of ``n_images`` train images.

    Parameters
    ----------
    n_images : int >= folds
    folds : int >= 2
    seed : int >= 0

    Returns
    -------
    fold : ndarray of shape (n_images,), int64
        Values in ``[0, folds)``.
    """
    folds = check_int(folds, "folds", low=2)
    seed = check_int(seed, "seed", low=0, high=2**63 - 1)
    n = check_int(n_images, "n_images", low=folds)
    out = np.empty(n, dtype=np.int64)
    for i, part in enumerate(fold_parts(n, folds, seed)[1]):
        out[part] = i
    return out


def crossfit_maps(
    features: np.ndarray,
    *,
    folds: int,
    seed: int,
    k: int,
    batch_size: int,
    build: BuildFn,
    score: ScoreFn,
    show_progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Cross-fitted calibration maps and max scores of train features.

    Parameters
    ----------
    features : ndarray of shape (N, h, w, D), float32
        Train patch features in fit order (N >= folds; validated by the caller).
    folds, seed : int
        Fold split (:func:`fold_parts`).
    k : int
        Neighbours of a patch score (checked against each fold bank's size).
    batch_size : int
        Images per scoring call.
    build : callable
        The detector's bank stage: features of the other folds -> :class:`MemoryBank`.
    score : callable
        The detector's map stage: ``(features, bank) -> (maps, score_max)``.
    show_progress : bool
        A tqdm bar over the folds.

    Returns
    -------
    maps : ndarray of shape (N, crop, crop), float32
    score_max : ndarray of shape (N,), float64

    Raises
    ------
    ValueError
        ``k`` exceeds the rows of a fold's bank.
    """
    n = features.shape[0]
    perm, parts = fold_parts(n, folds, seed)
    maps: np.ndarray | None = None
    smax = np.empty(n, dtype=np.float64)
    for held in progress(parts, show_progress, len(parts), "cross-fit"):
        bank = build(features[np.setdiff1d(perm, held)])
        if k > len(bank):
            raise ValueError(
                f"k={k} exceeds the {len(bank)} vectors of a cross-fit bank; "
                "lower k, raise coreset_ratio or use fewer folds"
            )
        for start in range(0, held.size, batch_size):
            idx = np.asarray(held[start : start + batch_size], dtype=np.int64)
            m, s = score(features[idx], bank)
            if maps is None:
                maps = np.empty((n, *m.shape[1:]), dtype=np.float32)
            maps[idx], smax[idx] = m, s
    assert maps is not None  # folds >= 2 and n >= folds: every image is scored
    return maps, smax
