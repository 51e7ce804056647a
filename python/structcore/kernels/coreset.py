"""Greedy k-center coreset (C++ core): PatchCore's approximate greedy coreset subsampling."""

from __future__ import annotations

import numpy as np

from .. import _core
from .._validation import check_threads
from ..projection import prepare_points
from ..reference.coreset import _validate

__all__ = ["MAX_PROJECTION_ELEMENTS", "coreset"]

#: Largest random projection matrix ``dim * projection_dim`` (elements; 1 GiB of float32).
MAX_PROJECTION_ELEMENTS = 2**28


def coreset(
    features: object,
    n: int,
    *,
    projection_dim: int | None = 128,
    seed: int = 0,
    threads: int | None = None,
) -> np.ndarray:
    """Select ``n`` rows of ``features`` by greedy k-center (farthest-point) selection.

    PatchCore's approximate greedy coreset (METHOD.md §1.3; Roth et al., CVPR 2022, after
    Sener & Savarese 2018): the points are mapped by a seeded Johnson-Lindenstrauss random
    projection; starting from a seeded random point, each step selects the point farthest
    (squared Euclidean distance in the projected space) from the points selected so far, which
    is a 2-approximation of the optimal k-center cover of the projected points.

    Parameters
    ----------
    features : array_like of shape (n_points, dim), float32
        Finite features, one row per patch. float64/float16 and non-contiguous arrays (and
        torch tensors) are converted once to a C-contiguous float32 copy; integer, bool and
        complex arrays raise ``TypeError``.
    n : int
        Number of rows to select, ``1 <= n <= n_points``.
    projection_dim : int or None, default 128
        Dimension of the Gaussian random projection the selection runs on. ``None`` or a value
        ``>= dim`` skips the projection: the selection then runs on the features themselves
        (float32, a scaled copy).
    seed : int, default 0
        Seed (>= 0) of ``numpy.random.default_rng``: gives the start index (first draw) and the
        projection matrix. Same seed and same data -> same coreset.
    threads : int or None, default None
        OpenMP threads of the selection (``None``: all). The result does not depend on it.
        The projection is one NumPy matrix product and uses NumPy's BLAS threads.

    Returns
    -------
    indices : ndarray of shape (n,), int64
        Distinct row indices in selection order; ``indices[0]`` is the seeded start.
        ``n = n_points`` gives a permutation.

    Raises
    ------
    TypeError
        ``features`` not a real floating array; ``n``, ``projection_dim``, ``seed`` or
        ``threads`` not integers.
    ValueError
        ``features`` not 2-D, empty or not finite; ``n`` outside ``[1, n_points]``;
        ``projection_dim < 1``; ``seed < 0``; ``threads < 1``; a projection matrix
        ``dim * projection_dim`` above ``MAX_PROJECTION_ELEMENTS`` (2**28) elements (refused
        before allocating).

    Notes
    -----
    The points are scaled by a power of two (exact: changes no distance comparison) so that
    huge or tiny magnitudes neither overflow nor underflow, and projected points are rounded to
    float16 (relative error <= 2**-11 per coordinate, far below the projection's distortion),
    which halves the memory traffic of each pass; see :mod:`structcore.projection`.
    Squared distances are float32 sums in a fixed order (see
    :func:`structcore.reference.coreset.squared_distances`), the same on every SIMD level and
    thread count, so the selection equals :func:`structcore.reference.coreset` exactly,
    ties included (lowest index first). Points equal to a selected one have distance 0 and
    are selected last, in index order. Selected points are never selected again.

    Steps skip, by the triangle inequality, the points that certainly cannot get closer to the
    new centre (each point is grouped with the centre it is nearest to; a point is skipped when
    the distance between its centre and the new one is at least twice its own distance, with a
    safety margin far above float32 rounding), so clustered data such as real patch features
    needs far fewer distance evaluations; skipped points keep exactly the value a full pass
    would give them, so the result is unchanged. Where nothing can be skipped (e.g.
    high-dimensional Gaussian data) the selection falls back to full passes after a few steps.

    Examples
    --------
    >>> import numpy as np
    >>> from structcore.kernels import coreset
    >>> x = np.array([[0.0], [1.0], [10.0], [4.0]], dtype=np.float32)
    >>> coreset(x, 3, seed=0).tolist()
    [3, 2, 0]
    """
    feats, n, projection_dim, seed = _validate(features, n, projection_dim, seed)
    n_threads = check_threads(threads)
    dim = feats.shape[1]
    if projection_dim is not None and projection_dim < dim:
        size = dim * projection_dim
        if size > MAX_PROJECTION_ELEMENTS:
            raise ValueError(
                f"projection_dim: the projection matrix would hold dim * projection_dim = "
                f"{dim} * {projection_dim} = {size} values, above the limit "
                f"MAX_PROJECTION_ELEMENTS = 2**28 = {MAX_PROJECTION_ELEMENTS}; use a smaller "
                "projection_dim"
            )
    prepared = prepare_points(feats, projection_dim, seed)
    points = prepared.points
    if points.dtype == np.float16:
        return _core.coreset_f16(points.view(np.uint16), n, prepared.start, n_threads)
    return _core.coreset(points, n, prepared.start, n_threads)
