"""PatchCore's memory bank: coreset selection, nearest-neighbour patch scores, score maps.

Thin glue between patch features (:mod:`structcore.features`) and the kernels; the heavy
lifting happens in :func:`structcore.kernels.coreset`, :func:`~structcore.kernels.knn` and
:func:`~structcore.kernels.anomaly_map` (``backend="cpp"``) or their NumPy twins in
:mod:`structcore.reference` (``backend="reference"``). METHOD.md §1.3 and §2.

* Bank size: ``max(1, round(coreset_ratio * n_patches))`` rows (all patches when that is
  ``n_patches``; then no selection runs and the bank keeps the input order).
* Patch score: Euclidean distance to the nearest bank vector; with ``k > 1`` the mean of the
  ``k`` smallest distances.
* Map: :func:`~structcore.kernels.anomaly_map` (bilinear upsampling of the patch grid to the
  crop size, then a Gaussian blur of ``sigma`` pixels).
* Reweighting (optional; PatchCore's paper, eq. 7): with ``m*`` the bank vector nearest to
  the test patch ``m_test`` with the highest patch score and ``N_b(m*)`` the ``b`` bank
  vectors nearest to ``m*`` (``m*`` itself included, ``b = REWEIGHT_NEIGHBORS = 9`` as in
  anomalib), the image score is multiplied by
  ``w = 1 - exp(||m_test - m*||) / sum_{m in N_b(m*)} exp(||m_test - m||)``.
  The paper reweights the patch-level maximum; here the weight multiplies max(S) of the
  final map (METHOD.md §2's baseline), computed at the patch with the highest patch score.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np

from ._validation import check_choice

__all__ = [
    "REWEIGHT_NEIGHBORS",
    "backend_module",
    "bank_size",
    "build_bank",
    "patch_scores",
    "reweight_factors",
    "score_maps",
]

#: Number of bank neighbours of ``m*`` in PatchCore's reweighting (anomalib's default).
REWEIGHT_NEIGHBORS = 9


def backend_module(backend: str) -> ModuleType:
    """The kernel module for ``backend``: ``"cpp"`` -> :mod:`structcore.kernels`,
    ``"reference"`` -> :mod:`structcore.reference`."""
    check_choice(backend, "backend", ("cpp", "reference"))
    name = "structcore.kernels" if backend == "cpp" else "structcore.reference"
    return importlib.import_module(name)


def bank_size(n_patches: int, ratio: float) -> int:
    """Rows kept by the coreset: ``max(1, round(ratio * n_patches))``, at most ``n_patches``."""
    return int(min(n_patches, max(1, round(ratio * n_patches))))


def build_bank(
    features: np.ndarray,
    ratio: float,
    *,
    projection_dim: int | None,
    seed: int,
    backend: ModuleType,
    threads: int | None,
) -> np.ndarray:
    """Select the memory bank from all train patch features.

    Parameters
    ----------
    features : ndarray of shape (n_patches, dim), float32
        Patch features of the train images, flattened.
    ratio : float in (0, 1]
        Coreset ratio.
    projection_dim : int or None
        Dimension of the coreset's random projection (None: no projection).
    seed : int
        Coreset seed.
    backend : module
        :mod:`structcore.kernels` or :mod:`structcore.reference`.
    threads : int or None
        Thread cap of the kernel.

    Returns
    -------
    bank : ndarray of shape (n_bank, dim), float32
        The selected rows in selection order (a copy).
    """
    n = bank_size(features.shape[0], ratio)
    if n == features.shape[0]:
        return np.ascontiguousarray(features, dtype=np.float32).copy()
    idx = backend.coreset(features, n, projection_dim=projection_dim, seed=seed, threads=threads)
    return np.ascontiguousarray(features[np.asarray(idx, dtype=np.int64)], dtype=np.float32)


def patch_scores(
    features: np.ndarray, bank: np.ndarray, k: int, *, backend: ModuleType, threads: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour patch scores of a batch of feature grids.

    Parameters
    ----------
    features : ndarray of shape (B, h, w, dim), float32
    bank : ndarray of shape (n_bank, dim), float32
    k : int
        Neighbours averaged (``1 <= k <= n_bank``).

    Returns
    -------
    scores : ndarray of shape (B, h, w), float32
        Distance to the nearest bank vector (mean of the ``k`` nearest).
    nearest : ndarray of shape (B, h, w), int64
        Index of the nearest bank vector.
    """
    b, h, w, d = features.shape
    dist, idx = backend.knn(features.reshape(b * h * w, d), bank, k, threads=threads)
    dist = np.asarray(dist, dtype=np.float32)
    scores = dist[:, 0] if k == 1 else dist.mean(axis=1, dtype=np.float32)
    nearest = np.asarray(idx, dtype=np.int64)[:, 0]
    return scores.reshape(b, h, w), nearest.reshape(b, h, w)


def score_maps(
    scores: np.ndarray,
    size: int,
    sigma: float,
    *,
    backend: ModuleType,
    threads: int | None,
) -> np.ndarray:
    """Anomaly maps S: ``(B, h, w)`` patch scores -> ``(B, size, size)`` float32 maps."""
    return np.asarray(
        backend.anomaly_map(scores, size, sigma=sigma, threads=threads), dtype=np.float32
    )


def reweight_factors(
    features: np.ndarray,
    scores: np.ndarray,
    nearest: np.ndarray,
    bank: np.ndarray,
    *,
    backend: ModuleType,
    threads: int | None,
) -> np.ndarray:
    """PatchCore's density reweighting factor per image (module docstring, eq. 7).

    Parameters
    ----------
    features : ndarray of shape (B, h, w, dim), float32
    scores : ndarray of shape (B, h, w), float32
        Patch scores (:func:`patch_scores`).
    nearest : ndarray of shape (B, h, w), int64
        Nearest bank index of each patch.
    bank : ndarray of shape (n_bank, dim), float32

    Returns
    -------
    weights : ndarray of shape (B,), float64
        In ``[0, 1)``; multiply the image's max score by it.
    """
    b, h, w, d = features.shape
    flat = scores.reshape(b, h * w)
    arg = np.argmax(flat, axis=1)  # first maximum on ties
    m_test = features.reshape(b, h * w, d)[np.arange(b), arg]  # (B, dim)
    m_star = bank[nearest.reshape(b, h * w)[np.arange(b), arg]]  # (B, dim)
    nb = min(REWEIGHT_NEIGHBORS, bank.shape[0])
    _, support = backend.knn(m_star, bank, nb, threads=threads)  # (B, nb), m* first
    support = np.asarray(support, dtype=np.int64)
    diff = m_test[:, None, :].astype(np.float64) - bank[support].astype(np.float64)
    dist = np.sqrt(np.sum(diff * diff, axis=2))  # (B, nb)
    # the distance to m* itself, computed the same way (robust to ties in `support`)
    d_star = np.sqrt(np.sum((m_test.astype(np.float64) - m_star.astype(np.float64)) ** 2, axis=1))
    shift = dist.max(axis=1, keepdims=True)  # softmax-style stabilisation, cancels exactly
    denom = np.exp(dist - shift).sum(axis=1)
    return 1.0 - np.exp(d_star - shift[:, 0]) / denom
