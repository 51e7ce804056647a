"""NumPy reference of the greedy k-center coreset (the oracle of ``structcore.kernels.coreset``)."""

from __future__ import annotations

import numpy as np

from .._validation import as_float_array, check_int, check_threads
from ..projection import prepare_points

__all__ = ["coreset", "squared_distances"]

#: Lanes of the canonical summation order (one AVX-512 register of float32).
LANES = 16


def squared_distances(points: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances in the canonical float32 summation order of the C++ core.

    The order, which the C++ kernel follows on every SIMD level, is: coordinates are padded
    with zeros to a multiple of 16; lane ``l`` accumulates ``(x[j] - c[j])**2`` over
    ``j = l, l + 16, l + 32, ...`` in increasing ``j`` (float32, one rounding per subtraction,
    product and addition, no fused multiply-add); then lanes are added pairwise as a tree:
    ``l + 8 -> l``, ``l + 4 -> l``, ``l + 2 -> l``, ``l + 1 -> l``.

    Parameters
    ----------
    points : ndarray of shape (n_points, dim), float32
    center : ndarray of shape (dim,), float32

    Returns
    -------
    ndarray of shape (n_points,), float32
    """
    n_points, dim = points.shape
    diff = points - center
    np.multiply(diff, diff, out=diff)
    pad = (-dim) % LANES
    if pad:
        diff = np.concatenate([diff, np.zeros((n_points, pad), dtype=np.float32)], axis=1)
    groups = diff.reshape(n_points, -1, LANES)
    acc = groups[:, 0, :].copy()
    for g in range(1, groups.shape[1]):
        acc += groups[:, g, :]  # sequential, one float32 rounding per addition
    width = LANES
    while width > 1:
        width //= 2
        acc = acc[:, :width] + acc[:, width : 2 * width]
    return acc[:, 0]


def coreset(
    features: object,
    n: int,
    *,
    projection_dim: int | None = 128,
    seed: int = 0,
    threads: int | None = None,
) -> np.ndarray:
    """Greedy k-center (farthest-point) coreset, written for clarity: one NumPy pass per pick.

    Same signature and same result (bit for bit) as :func:`structcore.kernels.coreset`;
    see there for the parameters and the algorithm. ``threads`` is validated and ignored.

    Parameters
    ----------
    features : array_like of shape (n_points, dim), float32
    n : int
        Number of points to select, in ``[1, n_points]``.
    projection_dim : int or None
        Johnson-Lindenstrauss target dimension; ``None`` or ``>= dim`` skips the projection.
    seed : int
        Seed of the projection and of the start index.
    threads : int or None
        Ignored (validated only).

    Returns
    -------
    ndarray of shape (n,), int64
        Selected row indices in selection order.

    Examples
    --------
    >>> import numpy as np
    >>> from structcore.reference import coreset
    >>> x = np.array([[0.0], [1.0], [10.0], [4.0]], dtype=np.float32)
    >>> coreset(x, 3, seed=0).tolist()  # start (seeded) at 3, then the farthest points
    [3, 2, 0]
    """
    feats, n, projection_dim, seed = _validate(features, n, projection_dim, seed)
    check_threads(threads)
    prepared = prepare_points(feats, projection_dim, seed)
    points = prepared.points.astype(np.float32)
    n_points = points.shape[0]

    selected = np.empty(n, dtype=np.int64)
    min_dist = np.full(n_points, np.inf, dtype=np.float32)
    current = prepared.start
    selected[0] = current
    for t in range(1, n):
        dist = squared_distances(points, points[current])
        np.minimum(min_dist, dist, out=min_dist)
        min_dist[selected[t - 1]] = -1.0  # selected points can never be picked again
        current = int(np.argmax(min_dist))  # first maximum: ties -> lowest index
        selected[t] = current
    return selected


def _validate(
    features: object, n: object, projection_dim: object, seed: object
) -> tuple[np.ndarray, int, int | None, int]:
    """Shared argument checks of kernels.coreset and reference.coreset."""
    feats = as_float_array(features, "features", ndim=2)
    n_int = check_int(n, "n", low=1, high=feats.shape[0])
    pdim = None if projection_dim is None else check_int(projection_dim, "projection_dim", low=1)
    seed_int = check_int(seed, "seed", low=0)
    return feats, n_int, pdim, seed_int
