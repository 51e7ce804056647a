"""The registry of descriptor components shared by ``kernels.describe`` and ``reference.describe``.

Every name the descriptor accepts, its one-line meaning, and the parser that turns a user's
``components`` argument into canonical ``(kind, quantile)`` pairs. See METHOD.md §3 (the paper's
three components) and §4 (the extended descriptor).

Quantile names
--------------
``"q99"`` is the 0.99 quantile. Any quantile can be asked for in two unambiguous spellings:

* ``"q<percent>"`` with an integer percent in [0, 100]: ``"q95"`` is the 0.95 quantile,
  ``"q50"`` the median, ``"q5"`` the 0.05 quantile;
* ``"q:<fraction>"`` with a fraction in [0, 1]: ``"q:0.995"``, ``"q:0.5"``.

``"q0.995"`` or ``"q99.5"`` (a dot without the colon) are rejected as ambiguous, with a message
suggesting ``"q:0.995"``. Quantiles use NumPy's default ``'linear'`` method (Hyndman & Fan
type 7) on the float64 values of the map.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from ._validation import check_int, check_positive_float

__all__ = [
    "DESCRIPTOR_COMPONENTS",
    "EXTENDED_COMPONENTS",
    "PAPER_COMPONENTS",
    "THRESHOLD_COMPONENTS",
    "check_options",
    "needs_threshold",
    "parse_components",
    "top_k_of",
]

#: Every component name with a one-line meaning (N = H * W pixels, t = ``threshold``,
#: w = S - t on the pixels where S > t). Angles in radians, lengths in pixels.
DESCRIPTOR_COMPONENTS: dict[str, str] = {
    "std": "population standard deviation of S (paper)",
    "top_mean": "mean of the k = max(1, round(top_ratio * N)) largest values of S (paper)",
    "tv": "total variation: (sum |horizontal| + sum |vertical| neighbour differences) / N (paper)",
    "max": "largest value of S",
    "min": "smallest value of S",
    "mean": "mean of S",
    "q99": "0.99 quantile of S (NumPy 'linear'); any quantile: 'q<percent>' or 'q:<fraction>'",
    "skew": "population skewness m3 / m2**1.5 of S; 0 for a constant map",
    "kurtosis": "population excess kurtosis m4 / m2**2 - 3 of S; 0 for a constant map",
    "centroid_y": "row of the centroid of w (pixels); the map centre (H - 1) / 2 without mass",
    "centroid_x": "column of the centroid of w (pixels); the map centre (W - 1) / 2 without mass",
    "mu20": "w-weighted variance of the row coordinate, sum w (y - cy)**2 / sum w (pixels**2)",
    "mu02": "w-weighted variance of the column coordinate, sum w (x - cx)**2 / sum w (pixels**2)",
    "mu11": "w-weighted covariance, sum w (y - cy) (x - cx) / sum w (pixels**2)",
    "spread": "RMS distance of the mass from its centroid, sqrt(mu20 + mu02) (pixels)",
    "eccentricity": "sqrt(1 - l2 / l1) of the mass covariance eigenvalues: 0 round or a point "
    "(l1 <= 1e-9 px^2), 1 a line",
    "orientation": "major-axis angle in (-pi/2, pi/2] from +x (columns) toward +y (rows)",
    "cc_count": "number of connected components of S > t",
    "cc_largest_area": "pixels of the largest component / N (largest = most pixels)",
    "cc_largest_mass": "sum of w over the largest component",
    "cc_total_area": "pixels with S > t / N",
    "cc_total_mass": "sum of w over all pixels with S > t",
    "cc_largest_compactness": "4 pi area / perimeter**2 of the largest (crack perimeter)",
    "cc_largest_fill": "area / bounding-box area of the largest component",
}

#: The paper's descriptor (StructCore, METHOD.md §3.1): the default.
PAPER_COMPONENTS: tuple[str, ...] = ("std", "top_mean", "tv")

#: Every named component, paper set first, then distribution, mass moments, components.
EXTENDED_COMPONENTS: tuple[str, ...] = tuple(DESCRIPTOR_COMPONENTS)

#: Components that need ``threshold``.
THRESHOLD_COMPONENTS: frozenset[str] = frozenset(
    name
    for name in DESCRIPTOR_COMPONENTS
    if name.startswith(("cc_", "centroid_", "mu"))
    or name in ("spread", "eccentricity", "orientation")
)

_PERCENT = re.compile(r"q(\d{1,3})")
_FRACTION = re.compile(r"q:(\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def _parse_one(name: object) -> tuple[str, float]:
    if not isinstance(name, str):
        raise TypeError(f"components must hold component names (str); got {name!r}")
    if name in DESCRIPTOR_COMPONENTS and name != "q99":
        return name, 0.0
    if name == "q99":
        return "quantile", 0.99
    m = _PERCENT.fullmatch(name)
    if m:
        pct = int(m.group(1))
        if pct > 100:
            raise ValueError(f"components: quantile {name!r} must be 'q0'..'q100'; got {pct}%")
        return "quantile", pct / 100.0
    if _FRACTION.fullmatch(name):
        q = float(name[2:])
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"components: quantile {name!r} must be in [0, 1]; got {q}")
        return "quantile", q
    if name.startswith("q") and len(name) > 1 and (name[1].isdigit() or name[1] == "."):
        raise ValueError(
            f"components: ambiguous quantile name {name!r}; use 'q<integer percent>' such as "
            f"'q99', or 'q:<fraction>' such as 'q:{name[1:]}'"
        )
    raise ValueError(
        f"components: unknown component {name!r}; known: {sorted(DESCRIPTOR_COMPONENTS)} "
        "and quantiles 'q<percent>' / 'q:<fraction>'"
    )


@lru_cache(maxsize=256)
def _parse_cached(components: tuple[object, ...]) -> tuple[tuple[str, float], ...]:
    return tuple(_parse_one(c) for c in components)


def parse_components(components: str | Sequence[str]) -> tuple[tuple[str, float], ...]:
    """Canonical ``(kind, quantile)`` pairs for ``components``, in the order given.

    Parameters
    ----------
    components : str or sequence of str
        Component names (see :data:`DESCRIPTOR_COMPONENTS`); a single ``str`` is one name.
        Repeats are allowed (repeated columns).

    Returns
    -------
    tuple of (str, float)
        ``kind`` is a name of :data:`DESCRIPTOR_COMPONENTS` except that every quantile
        (``"q99"``, ``"q95"``, ``"q:0.995"``) has kind ``"quantile"`` and its fraction in the
        second field (0.0 for the other kinds).

    Raises
    ------
    TypeError
        ``components`` is not a str or a sequence of str.
    ValueError
        Empty, or an unknown or malformed name.
    """
    if type(components) is tuple:  # fast path: the cached parse of a hashable tuple
        try:
            return _parse_cached(components)
        except TypeError:
            pass  # unhashable entries: the checks below raise the right error
    if isinstance(components, str):
        components = (components,)
    if not isinstance(components, Sequence):
        raise TypeError(f"components must be a sequence of names; got {type(components).__name__}")
    if len(components) == 0:
        raise ValueError("components must name at least one component; got an empty sequence")
    try:
        return _parse_cached(tuple(components))
    except TypeError as exc:  # unhashable entries
        if "unhashable" in str(exc):
            raise TypeError(
                f"components must hold component names (str); got {components!r}"
            ) from exc
        raise


def needs_threshold(parsed: Sequence[tuple[str, float]]) -> bool:
    """True when one of the parsed components needs ``threshold``."""
    if type(parsed) is tuple:
        return _needs_threshold_cached(parsed)
    return any(kind in THRESHOLD_COMPONENTS for kind, _ in parsed)


@lru_cache(maxsize=256)
def _needs_threshold_cached(parsed: tuple[tuple[str, float], ...]) -> bool:
    return any(kind in THRESHOLD_COMPONENTS for kind, _ in parsed)


def top_k_of(top_ratio: float, n_pixels: int) -> int:
    """``k = max(1, round(top_ratio * n_pixels))`` with Python's :func:`round` (half to even).

    ``top_ratio * n_pixels`` is one float64 product; a tie such as 2.5 rounds to 2 and 3.5 to 4
    (``round``'s banker's rounding, not half-up).
    """
    return max(1, round(top_ratio * n_pixels))


def check_options(
    parsed: Sequence[tuple[str, float]],
    top_ratio: object,
    threshold: object,
    connectivity: object,
) -> tuple[float, float | None, int]:
    """Validate ``top_ratio``, ``threshold`` and ``connectivity`` of ``describe``.

    Returns
    -------
    top_ratio : float
        In (0, 1].
    threshold : float or None
        Finite; may be None only when no parsed component needs it.
    connectivity : int
        4 or 8.
    """
    # Fast path for the common exact types (this runs on every call, for maps of a few us).
    if (
        type(top_ratio) is float
        and 0.0 < top_ratio <= 1.0
        and type(connectivity) is int
        and connectivity in (4, 8)
        and (
            (type(threshold) is float and math.isfinite(threshold))
            or (threshold is None and not needs_threshold(parsed))
        )
    ):
        return top_ratio, threshold, connectivity
    ratio = check_positive_float(top_ratio, "top_ratio")
    if ratio > 1.0:
        raise ValueError(f"top_ratio must be in (0, 1]; got {ratio!r}")
    conn = check_int(connectivity, "connectivity")
    if conn not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8; got {conn}")
    t: float | None = None
    if threshold is not None:
        if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, numbers.Real):
            raise TypeError(
                f"threshold must be a real number or None; got {threshold!r} "
                f"({type(threshold).__name__})"
            )
        t = float(threshold)
        if not math.isfinite(t):
            raise ValueError(f"threshold must be finite; got {t!r}")
    elif needs_threshold(parsed):
        wanting = sorted({kind for kind, _ in parsed if kind in THRESHOLD_COMPONENTS})
        raise ValueError(
            f"threshold is None, but components {wanting} need it (pixels with S > threshold); "
            "pass threshold=<float>, e.g. a high quantile of train-good pixel scores"
        )
    return ratio, t, conn
