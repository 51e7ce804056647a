"""The structural descriptor phi(S) of anomaly maps (METHOD.md §3.1 and §4), in C++.

:func:`describe` validates its arguments, maps component names to the integer codes of the C++
kernel (``structcore._core.describe``), and runs it with the GIL released, in parallel over maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from .. import _core
from .._components import (
    DESCRIPTOR_COMPONENTS,
    EXTENDED_COMPONENTS,
    PAPER_COMPONENTS,
    check_options,
    needs_threshold,
    parse_components,
    top_k_of,
)
from .._validation import as_float_array, check_threads

__all__ = [
    "DESCRIPTOR_COMPONENTS",
    "EXTENDED_COMPONENTS",
    "MAX_ABS_THRESHOLD",
    "PAPER_COMPONENTS",
    "describe",
]

#: Largest accepted ``|threshold|`` (2**128, just above the float32 range): beyond it the
#: above-threshold masses ``S - t`` overflow float64 in the moment sums.
MAX_ABS_THRESHOLD = 2.0**128


@lru_cache(maxsize=256)
def _codes(parsed: tuple[tuple[str, float], ...]) -> tuple[np.ndarray, np.ndarray]:
    table = _core.descriptor_codes()
    codes = np.array([table[kind][0] for kind, _ in parsed], dtype=np.int32)
    quantiles = np.array([q for _, q in parsed], dtype=np.float64)
    codes.setflags(write=False)
    quantiles.setflags(write=False)
    return codes, quantiles


def describe(
    maps: object,
    components: str | Sequence[str] = PAPER_COMPONENTS,
    *,
    top_ratio: float = 0.01,
    threshold: float | None = None,
    connectivity: int = 8,
    threads: int | None = None,
) -> np.ndarray:
    """Structural descriptor of each anomaly map: one float64 column per requested component.

    Parameters
    ----------
    maps : ndarray of shape (B, H, W) or (H, W), float32
        Anomaly maps S (N = H * W pixels each). float16/float64 input is converted to float32
        (one copy), as is non-contiguous input; integer, bool and complex dtypes raise TypeError.
        Values must be finite.
    components : str or sequence of str, default ("std", "top_mean", "tv")
        Names from :data:`DESCRIPTOR_COMPONENTS`, in the column order wanted (repeats allowed).
        Any quantile: ``"q<integer percent>"`` (``"q95"``) or ``"q:<fraction>"`` (``"q:0.995"``).
        :data:`PAPER_COMPONENTS` is the paper's descriptor (the default),
        :data:`EXTENDED_COMPONENTS` every named component.
    top_ratio : float, default 0.01
        In (0, 1]. ``top_mean`` averages the k = max(1, round(top_ratio * N)) largest values;
        ``round`` is Python's (half to even: 2.5 -> 2, 3.5 -> 4).
    threshold : float, optional
        t for the mass moments (``centroid_*``, ``mu*``, ``spread``, ``eccentricity``,
        ``orientation``) and the connected components (``cc_*``). A pixel is above when
        S > t, compared in float64; its mass is w = S - t. Required (ValueError) when one of
        these components is requested, ignored otherwise.
    connectivity : {4, 8}, default 8
        Neighbourhood of the connected components of S > t.
    threads : int, optional
        OpenMP threads over the maps of a batch (default: all). Results do not depend on it.

    Returns
    -------
    phi : ndarray of shape (B, F) or (F,), float64
        F = len(components); (F,) when ``maps`` is a single (H, W) map.

    Raises
    ------
    TypeError
        Non-float ``maps``, non-str component names, non-numeric options.
    ValueError
        Wrong rank, empty or non-finite ``maps``; unknown component; ``top_ratio`` outside
        (0, 1]; ``connectivity`` not 4 or 8; ``threshold`` missing when needed, not finite
        or outside ``[-MAX_ABS_THRESHOLD, MAX_ABS_THRESHOLD]`` (2**128).

    Notes
    -----
    Conventions (y = row, x = column, both in pixels; angles in radians):

    * ``std``, ``skew``, ``kurtosis`` use population moments (divide by N); ``kurtosis`` is the
      excess kurtosis. A constant map has ``std`` = ``skew`` = ``kurtosis`` = 0.
    * ``tv`` = (sum |S[y, x+1] - S[y, x]| + sum |S[y+1, x] - S[y, x]|) / N; a 1 x N map has no
      vertical term, an N x 1 map no horizontal term.
    * Quantiles follow :func:`numpy.quantile`'s default ``'linear'`` method on float64 values.
    * ``mu20`` / ``mu02`` / ``mu11`` are the w-weighted (co)variances of the row / column
      coordinates (first index = rows, as in scikit-image), normalised by the total mass.
      ``eccentricity`` = sqrt(1 - l2 / l1) for the eigenvalues l1 >= l2 of
      [[mu20, mu11], [mu11, mu02]] (0 for a disc, 1 for a line). ``orientation`` =
      0.5 atan2(2 mu11, mu02 - mu20): the major axis' angle from the +x axis (columns,
      rightward) toward +y (rows, downward), in (-pi/2, pi/2]; 0 for isotropic mass
      (l1 - l2 <= 1e-9 (l1 + l2)).
    * Without mass above t: centroid = map centre ((H - 1) / 2, (W - 1) / 2), moments,
      ``spread``, ``eccentricity``, ``orientation`` and every ``cc_*`` = 0.
    * Components: 4- or 8-connected regions of S > t (``scipy.ndimage.label`` semantics). The
      largest has the most pixels; ties go to the first in raster order. Its perimeter is the
      crack perimeter (pixel edges between it and any other pixel or the map border, holes
      included): ``cc_largest_compactness`` = 4 pi area / perimeter**2 is pi/4 ~ 0.785 for a
      single pixel or an axis-aligned square and tends to pi**2/16 ~ 0.617 for a disc.
      ``cc_largest_fill`` = area / bounding-box area (1 for a rectangle).

    The C++ kernel reads each map in one fused SIMD pass (shifted power sums, extrema, total
    variation, the threshold bitmask fed row by row to a run-based union-find labelling that
    accumulates every component statistic, and the compaction of a sampled candidate set for
    the order statistics), then selects with ``std::nth_element``; see ``descriptors.hpp``.
    Floating statistics agree with :func:`structcore.reference.describe` to ~1e-12 relative
    (summation order differs), integer ones exactly.

    Examples
    --------
    >>> import numpy as np
    >>> from structcore.kernels import describe
    >>> s = np.zeros((8, 8), np.float32)
    >>> s[2:4, 2:5] = 1.0
    >>> describe(s, ["max", "cc_count", "cc_largest_fill"], threshold=0.5).tolist()
    [1.0, 1.0, 1.0]
    """
    parsed = parse_components(components)
    ratio, t, conn = check_options(parsed, top_ratio, threshold, connectivity)
    if t is not None and abs(t) > MAX_ABS_THRESHOLD and needs_threshold(parsed):
        raise ValueError(
            f"threshold must lie in [-2**128, 2**128] (MAX_ABS_THRESHOLD, the float32 range); "
            f"got {t!r}"
        )
    nthreads = threads if type(threads) is int and 1 <= threads <= 4096 else check_threads(threads)
    # Finiteness is checked by the kernel (its float64 sum is NaN/Inf exactly when the map
    # holds one), saving a full extra pass here.
    arr = as_float_array(maps, "maps", ndim=(2, 3), finite=False)
    single = arr.ndim == 2
    batch = arr[None] if single else arr
    codes, quantiles = _codes(parsed)
    top_k = top_k_of(ratio, batch.shape[1] * batch.shape[2])
    phi = _core.describe(batch, codes, quantiles, top_k, t, conn, nthreads)
    return phi[0] if single else phi
