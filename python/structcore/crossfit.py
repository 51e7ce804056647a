"""Calibration maps of the train images (METHOD.md §3.5): cross-fitted or same-train.

Maps of train images scored against a bank that contains those same images are biased low.
Cross-fitting: the images are split into ``folds`` seeded folds
(``numpy.random.default_rng(seed).permutation``, then ``numpy.array_split``); a bank without
any row of a fold's images scores that fold. Two ways to get that bank (the detector's
``crossfit_bank``):

* ``"coreset"`` (:func:`refit_bank`): a fresh coreset of the other folds' patches (same coreset
  ratio, projection and seed): ``folds`` more coreset selections, each over
  ``(folds - 1) / folds`` of the patches; the cost grows with the square of the train size;
* ``"masked"`` (:func:`masked_bank`): the final coreset without the rows selected from the
  fold's images (:meth:`MemoryBank.without_images`): no further selection, and the same
  number of rows as a refitted fold bank on average.

These banks serve calibration only; the detector's final bank uses all images. The same fold
banks score the synthetic defects of ``calibration="synthetic"`` (:func:`crossfit_maps`'s
``on_bank``): a defect made on an image of fold ``f`` is scored by fold ``f``'s bank, which
holds no patch of its source image, exactly as that image's own good map is.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ._progress import progress
from ._validation import check_int
from .memory_bank import MemoryBank

__all__ = [
    "CROSSFIT_BANKS",
    "crossfit_folds",
    "crossfit_maps",
    "fold_parts",
    "masked_bank",
    "refit_bank",
]

#: How the bank of a held-out fold is made (module docstring).
CROSSFIT_BANKS = ("masked", "coreset")

#: ``score(features (B, h, w, D), bank) -> (maps (B, crop, crop) float32, score_max (B,))``
ScoreFn = Callable[[np.ndarray, MemoryBank], tuple[np.ndarray, np.ndarray]]
#: ``build(held (n_held,) int64) -> MemoryBank`` holding no row of the ``held`` images
BuildFn = Callable[[np.ndarray], MemoryBank]
#: ``on_bank(held (n_held,) int64, bank)``: called once per fold with the fold's bank
BankFn = Callable[[np.ndarray, MemoryBank], None]


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


def refit_bank(
    features: np.ndarray, held: np.ndarray, build: Callable[[np.ndarray], MemoryBank]
) -> MemoryBank:
    """A fresh bank of the images not in ``held``: ``build(features[rest])``.

    Parameters
    ----------
    features : ndarray of shape (N, h, w, D), float32
    held : ndarray of int64
        The held-out images.
    build : callable
        Features (n, h, w, D) -> :class:`MemoryBank` (the detector's coreset stage).
    """
    rest = np.setdiff1d(np.arange(features.shape[0]), held)
    return build(features[rest])


def masked_bank(final: MemoryBank, held: np.ndarray) -> MemoryBank:
    """The final bank without the rows selected from the ``held`` images."""
    return final.without_images(held)


def locate_rows(vectors: np.ndarray, features: np.ndarray) -> np.ndarray:
    """The image each bank row was selected from, found by exact match in ``features``.

    For a bank given from outside (``Detector.fit_features(bank=...)``, or after ``load``),
    whose rows are rows of ``features`` (the coreset copies them bit for bit).

    Parameters
    ----------
    vectors : ndarray of shape (n_bank, D), float32
    features : ndarray of shape (N, h, w, D), float32

    Returns
    -------
    sources : ndarray of shape (n_bank,), int64
        For each row, the first image holding an identical patch vector.

    Raises
    ------
    ValueError
        A row occurs in no image (the bank was not selected from these features): use
        ``crossfit_bank="coreset"``.
    """
    _, h, w, d = features.shape
    flat = np.ascontiguousarray(features.reshape(-1, d))
    where: dict[bytes, int] = {}
    for i in range(flat.shape[0] - 1, -1, -1):  # backwards: the first occurrence wins
        where[flat[i].tobytes()] = i // (h * w)
    try:
        return np.fromiter(
            (where[r.tobytes()] for r in np.ascontiguousarray(vectors)),
            dtype=np.int64,
            count=vectors.shape[0],
        )
    except KeyError:
        raise ValueError(
            "crossfit_bank='masked' needs a bank selected from these train features (a bank "
            "row occurs in none of them); pass the features the bank was built from, or use "
            "crossfit_bank='coreset'"
        ) from None


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
    on_bank: BankFn | None = None,
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
        The bank of a fold: ``build(held)`` returns a :class:`MemoryBank` with no row from
        the ``held`` images (:func:`refit_bank` or :func:`masked_bank`).
    score : callable
        The detector's map stage: ``(features, bank) -> (maps, score_max)``.
    show_progress : bool
        A tqdm bar over the folds.
    on_bank : callable or None
        ``on_bank(held, bank)``, called once per fold after the fold's images are scored,
        with the fold's bank (no row of the ``held`` images): e.g. to score the synthetic
        defects made on the held images with the same bank.

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
    _, parts = fold_parts(n, folds, seed)
    maps: np.ndarray | None = None
    smax = np.empty(n, dtype=np.float64)
    for held in progress(parts, show_progress, len(parts), "cross-fit"):
        bank = build(held)
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
        if on_bank is not None:
            on_bank(held, bank)
    assert maps is not None  # folds >= 2 and n >= folds: every image is scored
    return maps, smax
