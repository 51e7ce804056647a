"""NumPy/SciPy reference of the structural descriptor (the oracle of ``kernels.describe``).

Written for clarity: explicit formulas in float64, :func:`numpy.quantile` for the order
statistics and :func:`scipy.ndimage.label` for the connected components. Same signature,
validation and documented values as :func:`structcore.kernels.describe`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._components import (
    DESCRIPTOR_COMPONENTS,
    EXTENDED_COMPONENTS,
    PAPER_COMPONENTS,
    check_options,
    parse_components,
    top_k_of,
)
from .._validation import as_float_array, check_threads

__all__ = ["DESCRIPTOR_COMPONENTS", "EXTENDED_COMPONENTS", "PAPER_COMPONENTS", "describe"]

_ISOTROPIC = 1e-9  # relative: orientation is 0 when l1 - l2 <= 1e-9 (l1 + l2)
# A mass whose largest variance is at most 1e-9 px^2 is a point: eccentricity and orientation
# 0. (Below that, a shape is not resolvable in float64 from raw moments: the C++ kernel's
# one-pass moments lose it to cancellation, e.g. a 1e-40 weight beside a weight of 1.)
_POINT_VARIANCE = 1e-9


def describe(
    maps: object,
    components: str | Sequence[str] = PAPER_COMPONENTS,
    *,
    top_ratio: float = 0.01,
    threshold: float | None = None,
    connectivity: int = 8,
    threads: int | None = None,
) -> np.ndarray:
    """Structural descriptor of each map, in NumPy/SciPy (reference).

    Parameters
    ----------
    maps : ndarray of shape (B, H, W) or (H, W), float
        Anomaly maps S; float64 input is converted to float32 first, as the kernel does.
    components : sequence of str
        Names from :data:`DESCRIPTOR_COMPONENTS` (and quantiles ``"q<percent>"``,
        ``"q:<fraction>"``).
    top_ratio : float
        In (0, 1]; ``top_mean`` averages the ``max(1, round(top_ratio * H * W))`` largest values.
    threshold : float, optional
        t for the mass-moment and ``cc_*`` components (pixels with S > t, compared in float64).
    connectivity : {4, 8}
        Neighbourhood of the connected components.
    threads : int, optional
        Accepted for signature parity; ignored.

    Returns
    -------
    phi : ndarray of shape (B, F) or (F,), float64
        One column per requested component; (F,) for a single (H, W) map.
    """
    parsed = parse_components(components)
    ratio, t, conn = check_options(parsed, top_ratio, threshold, connectivity)
    check_threads(threads)
    arr = as_float_array(maps, "maps", ndim=(2, 3))
    single = arr.ndim == 2
    batch = arr[None] if single else arr
    out = np.array([_describe_one(m, parsed, ratio, t, conn) for m in batch], dtype=np.float64)
    out = out.reshape(len(batch), len(parsed))
    return out[0] if single else out


def _describe_one(
    map32: np.ndarray,
    parsed: Sequence[tuple[str, float]],
    top_ratio: float,
    t: float | None,
    connectivity: int,
) -> list[float]:
    s = map32.astype(np.float64)
    n = s.size
    mean = s.mean()
    d = s - mean
    m2 = float(np.mean(d**2))
    cache: dict[str, object] = {}

    def threshold_stats() -> dict[str, float]:
        if "thr" not in cache:
            assert t is not None
            cache["thr"] = _threshold_stats(s, t, connectivity)
        return cache["thr"]  # type: ignore[return-value]

    values: list[float] = []
    for kind, q in parsed:
        if kind == "std":
            v = np.sqrt(m2)
        elif kind == "top_mean":
            k = top_k_of(top_ratio, n)
            v = np.sort(s, axis=None)[n - k :].mean()
        elif kind == "tv":
            v = (np.abs(np.diff(s, axis=1)).sum() + np.abs(np.diff(s, axis=0)).sum()) / n
        elif kind == "max":
            v = s.max()
        elif kind == "min":
            v = s.min()
        elif kind == "mean":
            v = mean
        elif kind == "quantile":
            v = np.quantile(s, q)
        elif kind == "skew":
            v = np.mean(d**3) / m2**1.5 if m2 > 0 else 0.0
        elif kind == "kurtosis":
            v = np.mean(d**4) / m2**2 - 3.0 if m2 > 0 else 0.0
        else:
            v = threshold_stats()[kind]
        values.append(float(v))
    return values


def _threshold_stats(s: np.ndarray, t: float, connectivity: int) -> dict[str, float]:
    h, w = s.shape
    n = s.size
    above = s > t  # float64 comparison
    wmass = np.where(above, s - t, 0.0)
    total = float(wmass.sum())
    out: dict[str, float] = {}

    # -- moments of the above-threshold mass --
    if above.any():
        yy, xx = np.indices(s.shape, dtype=np.float64)
        cy = float((wmass * yy).sum() / total)
        cx = float((wmass * xx).sum() / total)
        mu20 = float((wmass * (yy - cy) ** 2).sum() / total)
        mu02 = float((wmass * (xx - cx) ** 2).sum() / total)
        mu11 = float((wmass * (yy - cy) * (xx - cx)).sum() / total)
    else:
        cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
        mu20 = mu02 = mu11 = 0.0
    cov = np.array([[mu20, mu11], [mu11, mu02]])
    l2, l1 = np.linalg.eigvalsh(cov)  # ascending
    ecc = float(np.sqrt(np.clip(1.0 - l2 / l1, 0.0, 1.0))) if l1 > _POINT_VARIANCE else 0.0
    if l1 > _POINT_VARIANCE and l1 - l2 > _ISOTROPIC * (l1 + l2):
        orient = 0.5 * np.arctan2(2.0 * mu11, mu02 - mu20)
        if orient <= -np.pi / 2:
            orient = np.pi / 2
    else:
        orient = 0.0
    out.update(
        centroid_y=cy,
        centroid_x=cx,
        mu20=mu20,
        mu02=mu02,
        mu11=mu11,
        spread=float(np.sqrt(mu20 + mu02)),
        eccentricity=ecc,
        orientation=float(orient),
    )

    # -- connected components --
    from scipy import ndimage  # lazily: `import structcore` stays scipy-free

    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    labels, count = ndimage.label(above, structure=structure)
    out["cc_count"] = float(count)
    out["cc_total_area"] = float(above.sum()) / n
    out["cc_total_mass"] = total
    if count == 0:
        out.update(
            cc_largest_area=0.0,
            cc_largest_mass=0.0,
            cc_largest_compactness=0.0,
            cc_largest_fill=0.0,
        )
        return out
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    masses = np.bincount(labels.ravel(), weights=wmass.ravel(), minlength=count + 1)[1:]
    big = int(np.argmax(areas))  # first maximum = first in raster order
    comp = labels == big + 1
    # crack perimeter: pixel edges between the component and anything else (map border included)
    padded = np.pad(comp, 1).astype(np.int8)
    perimeter = int(np.abs(np.diff(padded, axis=0)).sum() + np.abs(np.diff(padded, axis=1)).sum())
    rows, cols = ndimage.find_objects(labels)[big]
    bbox = (rows.stop - rows.start) * (cols.stop - cols.start)
    area = int(areas[big])
    out["cc_largest_area"] = area / n
    out["cc_largest_mass"] = float(masses[big])
    out["cc_largest_compactness"] = 4.0 * np.pi * area / perimeter**2
    out["cc_largest_fill"] = area / bbox
    return out
