"""Seeded Johnson-Lindenstrauss projection shared by the C++ coreset and its NumPy reference.

Both :func:`structcore.kernels.coreset` and :func:`structcore.reference.coreset` call
:func:`prepare_points` so that the same ``(features, projection_dim, seed)`` gives them the very
same points (bit for bit) and the same start index; the greedy selection that follows is then
identical as well (see ``structcore.reference.coreset`` for the distance's summation order).

What it does, in order (METHOD.md §1.3):

1. ``rng = numpy.random.default_rng(seed)``; the start index is ``rng.integers(n_points)``
   (PatchCore and anomalib also start from a random point), drawn first so that it does not
   depend on ``projection_dim``.
2. Projection, when ``projection_dim`` is an int < ``dim``: a dense Gaussian matrix
   ``R = rng.standard_normal((dim, projection_dim), float32) / sqrt(projection_dim)`` and
   ``points = features @ R`` (float32, NumPy's BLAS with its own thread settings).
   Features whose largest magnitude is outside ``[2**-60, 2**60]`` are first scaled by a power
   of two (exact) so that the product can neither overflow nor underflow.
   With ``projection_dim=None`` or ``projection_dim >= dim`` the features are used as they are.
3. The points are scaled by a power of two so that their largest magnitude lies in
   ``[2**14, 2**15)``. A power-of-two scale is exact in binary floating point, so it changes no
   selection; it only keeps squared distances far from float32 overflow and underflow (huge and
   tiny feature magnitudes give the same coreset).
4. Projected points are rounded to float16 (round to nearest even) and the C++ core stores
   them in that form: half the memory traffic of float32 in the bandwidth-bound selection
   loop. The relative rounding error (<= 2**-11 per coordinate) is far below the projection's
   own distance distortion. Unprojected features stay float32.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = ["PreparedPoints", "prepare_points", "random_projection_matrix"]

#: Points are scaled so that max |x| lies in [2**(_TARGET_EXP - 1), 2**_TARGET_EXP).
_TARGET_EXP = 15
#: Features with max |x| outside [2**-_SAFE_EXP, 2**_SAFE_EXP] are pre-scaled before the GEMM.
_SAFE_EXP = 60


class PreparedPoints(NamedTuple):
    """The points the greedy selection runs on.

    Attributes
    ----------
    points : ndarray of shape (n_points, dim_used), float16 or float32, C-contiguous
        Projected points (float16) or the scaled original features (float32).
    start : int
        Index of the first selected point, in ``[0, n_points)``.
    """

    points: np.ndarray
    start: int


def random_projection_matrix(dim: int, projection_dim: int, rng: np.random.Generator) -> np.ndarray:
    """Dense Gaussian Johnson-Lindenstrauss matrix.

    Parameters
    ----------
    dim : int
        Input dimension (rows).
    projection_dim : int
        Output dimension (columns).
    rng : numpy.random.Generator
        Source of randomness (consumed).

    Returns
    -------
    ndarray of shape (dim, projection_dim), float32
        Entries i.i.d. N(0, 1 / projection_dim), so squared norms are preserved in expectation.
    """
    r = rng.standard_normal((dim, projection_dim), dtype=np.float32)
    r *= np.float32(1.0 / math.sqrt(projection_dim))
    return r


def _scale_pow2(x: np.ndarray, target_exp: int, *, copy: bool) -> np.ndarray:
    """Scale ``x`` by a power of two: max |x| in [2**(target_exp - 1), 2**target_exp)."""
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0.0:
        return x.copy() if copy else x
    _, exp = math.frexp(peak)  # peak = m * 2**exp with m in [0.5, 1)
    shift = target_exp - exp
    if shift == 0:
        return x.copy() if copy else x
    out = x.copy() if copy else x
    np.ldexp(out, np.int32(shift), out=out)  # exact: no overflow, underflow only below 2**-149
    return out


def prepare_points(features: np.ndarray, projection_dim: int | None, seed: int) -> PreparedPoints:
    """Project (seeded), scale by a power of two and round: the input of the greedy selection.

    Parameters
    ----------
    features : ndarray of shape (n_points, dim), float32, C-contiguous, finite
        Validated features (the caller checks them).
    projection_dim : int or None
        Target dimension of the projection; ``None`` or ``>= dim`` skips it.
    seed : int
        Seed of ``numpy.random.default_rng`` (>= 0).

    Returns
    -------
    PreparedPoints
        ``points`` of shape (n_points, projection_dim) float16 when projected, else
        (n_points, dim) float32; ``start`` the seeded start index.
    """
    n_points, dim = features.shape
    rng = np.random.default_rng(seed)
    start = int(rng.integers(n_points))
    if projection_dim is None or projection_dim >= dim:
        return PreparedPoints(_scale_pow2(features, _TARGET_EXP, copy=True), start)

    r = random_projection_matrix(dim, projection_dim, rng)
    peak = float(np.max(np.abs(features)))
    x = features
    if peak != 0.0 and not (2.0**-_SAFE_EXP <= peak <= 2.0**_SAFE_EXP):
        x = _scale_pow2(features, 0, copy=True)  # max |x| in [0.5, 1)
    projected = np.matmul(x, r)
    if not np.isfinite(projected).all():  # cannot happen after the pre-scaling; belt and braces
        raise ValueError("features: the random projection overflowed")
    _scale_pow2(projected, _TARGET_EXP, copy=False)
    return PreparedPoints(np.ascontiguousarray(projected.astype(np.float16)), start)
