"""Evaluation metrics: image AUROC, F1-max, pixel AUROC and AUPRO up to 30% FPR.

Image-level metrics take one score per image and a 0/1 label per image (1 = defective).
Pixel-level metrics take the anomaly maps ``(n_images, H, W)`` and boolean ground-truth masks
of the same shape (normal images contribute all-zero masks). All pixel-level metrics come from
one descending sort of the pixel scores (:func:`pixel_metrics`), so evaluating a few million
pixels costs one ``argsort``.

PRO and AUPRO follow the MVTec AD papers (Bergmann et al., IJCV 2021, "The MVTec Anomaly
Detection Dataset"; and MVTec's public evaluation code):

* the ground-truth regions are the connected components of each image's mask, 8-connected
  (``scipy.ndimage.label`` with a 3x3 structuring element, as MVTec's evaluation code does);
* at a threshold ``t`` the per-region overlap (PRO) is the mean over *all* regions of all
  images of ``|region ∩ {S > t}| / |region|``, and the false-positive rate is the fraction of
  defect-free pixels (over all images) with ``S > t``;
* the curve is evaluated exactly at every distinct score (pixels with equal scores switch
  together), starts at (0, 0), and its area over FPR in [0, 0.3] (trapezoids; the point at
  FPR = 0.3 linearly interpolated) is divided by 0.3, so a perfect map scores 1.0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

from ._validation import as_float_array, check_positive_float

__all__ = [
    "aupro",
    "f1_max",
    "image_auroc",
    "image_metrics",
    "mean_metrics",
    "pixel_auroc",
    "pixel_metrics",
    "roc_points",
]


def _labels(labels: object, n: int | None = None, name: str = "labels") -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional; got shape {arr.shape}")
    if arr.dtype.kind not in "biu":
        raise TypeError(f"{name} must hold 0/1 integers or bools; got dtype {arr.dtype}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1; got values {np.unique(arr)[:5]}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries but scores have {n}")
    return arr.astype(bool)


def _scores(scores: object, name: str = "scores") -> np.ndarray:
    arr = np.asarray(scores)
    if arr.dtype.kind in "biu":  # integer and bool scores are valid rankings
        arr = arr.astype(np.float64)
    return as_float_array(arr, name, ndim=1, dtype=np.float64)


def image_auroc(labels: object, scores: object) -> float | None:
    """Area under the ROC curve of image scores (scikit-learn's ``roc_auc_score``).

    Parameters
    ----------
    labels : array_like of shape (n_images,), 0/1 int or bool
        1 = defective.
    scores : array_like of shape (n_images,), float
        Higher = more anomalous.

    Returns
    -------
    float or None
        AUROC in [0, 1]; ``None`` when the labels hold a single class.

    Examples
    --------
    >>> image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    s = _scores(scores)
    y = _labels(labels, s.shape[0])
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, s))


def f1_max(labels: object, scores: object) -> float | None:
    """Best F1 over all thresholds of the scores (image level).

    Parameters
    ----------
    labels : array_like of shape (n,), 0/1 int or bool
    scores : array_like of shape (n,), float

    Returns
    -------
    float or None
        ``max_t 2 P(t) R(t) / (P(t) + R(t))``; ``None`` when there is no positive label.

    Examples
    --------
    >>> round(f1_max([0, 1, 1, 0], [0.1, 0.9, 0.3, 0.4]), 4)
    0.8
    """
    s = _scores(scores)
    y = _labels(labels, s.shape[0])
    if not y.any():
        return None
    precision, recall, _ = precision_recall_curve(y, s)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(f1.max())


def roc_points(labels: object, scores: object) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve of image scores (scikit-learn's ``roc_curve``).

    Returns
    -------
    fpr, tpr : ndarray of shape (n_points,), float64
    """
    s = _scores(scores)
    y = _labels(labels, s.shape[0])
    fpr, tpr, _ = roc_curve(y, s)
    return fpr, tpr


def image_metrics(labels: object, scores: Mapping[str, object]) -> dict[str, dict[str, Any]]:
    """Image AUROC and F1-max for several named scores of the same images.

    Parameters
    ----------
    labels : array_like of shape (n_images,), 0/1
    scores : mapping of str to array_like of shape (n_images,)
        E.g. ``{"max": ..., "structcore": ...}``.

    Returns
    -------
    dict
        ``{"image_auroc": {name: float | None}, "f1_max": {name: float | None}}``.
    """
    return {
        "image_auroc": {k: image_auroc(labels, v) for k, v in scores.items()},
        "f1_max": {k: f1_max(labels, v) for k, v in scores.items()},
    }


# --------------------------------------------------------------------------- pixel level


def _check_pixels(masks: object, maps: object) -> tuple[np.ndarray, np.ndarray]:
    m = as_float_array(maps, "maps", ndim=(2, 3), dtype=np.float32)
    g = np.asarray(masks)
    if g.dtype.kind not in "biuf":
        raise TypeError(f"masks must be bool or 0/1 numbers; got dtype {g.dtype}")
    if g.shape != m.shape:
        raise ValueError(f"masks shape {g.shape} does not match maps shape {m.shape}")
    if g.dtype != np.bool_:
        if g.size and not np.isin(g, (0, 1)).all():
            raise ValueError("masks must hold only 0/1 (or bool) values")
        g = g.astype(bool)
    if m.ndim == 2:
        m, g = m[None], g[None]
    return g, m


def _regions(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Global region ids per pixel (0 = background) across images, and the region count."""
    from scipy import ndimage  # lazily: `import structcore` stays scipy-free

    ids = np.zeros(masks.shape, dtype=np.int64)
    structure = np.ones((3, 3), dtype=bool)  # 8-connectivity, as MVTec's evaluation code
    total = 0
    for i in range(masks.shape[0]):
        if not masks[i].any():
            continue
        lab, n = ndimage.label(masks[i], structure=structure)
        ids[i] = np.where(lab > 0, lab + total, 0)
        total += int(n)
    return ids, total


def _trapezoid_upto(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Area under the piecewise-linear y(x) (x non-decreasing, from x[0]) over [x[0], x_max]."""
    keep = x <= x_max
    xs, ys = x[keep], y[keep]
    area = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))
    j = int(np.count_nonzero(keep))
    if j < x.shape[0] and xs.shape[0] and xs[-1] < x_max:
        x0, y0, x1, y1 = xs[-1], ys[-1], x[j], y[j]
        y_at = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0) if x1 > x0 else y0
        area += float((x_max - x0) * (y0 + y_at) / 2.0)
    return area


def pixel_metrics(masks: object, maps: object, *, max_fpr: float = 0.3) -> dict[str, float | None]:
    """Pixel AUROC, AUPRO up to ``max_fpr`` and pixel F1-max, from one sort.

    Parameters
    ----------
    masks : array_like of shape (n_images, H, W) or (H, W), bool or 0/1
        Ground truth (True = defect pixel).
    maps : array_like of the same shape, float
        Anomaly maps (higher = more anomalous). float64 is converted to float32.
    max_fpr : float
        Upper FPR limit of the AUPRO integral, in (0, 1]; default 0.3 as in the MVTec papers.

    Returns
    -------
    dict
        ``{"pixel_auroc", "aupro", "pixel_f1_max"}``; each is ``None`` when the masks hold no
        defect pixel (or no normal pixel, for the AUROC and AUPRO).

    Notes
    -----
    AUPRO is normalised by ``max_fpr`` (see the module docstring for the exact definition).
    """
    max_fpr = check_positive_float(max_fpr, "max_fpr")
    if max_fpr > 1.0:
        raise ValueError(f"max_fpr must be in (0, 1]; got {max_fpr}")
    gt, sm = _check_pixels(masks, maps)
    n_pos = int(np.count_nonzero(gt))
    n_neg = gt.size - n_pos
    out: dict[str, float | None] = {"pixel_auroc": None, "aupro": None, "pixel_f1_max": None}
    if n_pos == 0:
        return out
    region_ids, n_regions = _regions(gt)
    flat_ids = region_ids.ravel()
    del region_ids
    region_sizes = np.bincount(flat_ids, minlength=n_regions + 1).astype(np.float64)

    scores = sm.ravel()
    order = np.argsort(scores, kind="stable")[::-1]
    s_sorted = scores[order]
    # Index of the last pixel of each run of equal scores (the curve's vertices).
    ends = np.flatnonzero(s_sorted[1:] != s_sorted[:-1])
    ends = np.append(ends, s_sorted.shape[0] - 1)
    del s_sorted

    pos_sorted = gt.ravel()[order]
    tps = np.cumsum(pos_sorted, dtype=np.int64)[ends].astype(np.float64)
    fps = (ends + 1).astype(np.float64) - tps
    precision = tps / (tps + fps)
    recall = tps / n_pos
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    out["pixel_f1_max"] = float(f1.max())
    if n_neg == 0:
        return out

    fpr = np.concatenate([[0.0], fps / n_neg])
    tpr = np.concatenate([[0.0], tps / n_pos])
    out["pixel_auroc"] = float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2.0))

    ids_sorted = flat_ids[order]
    del order
    pro_weight = np.zeros(n_regions + 1, dtype=np.float64)
    pro_weight[1:] = 1.0 / (n_regions * region_sizes[1:])
    pro = np.concatenate([[0.0], np.cumsum(pro_weight[ids_sorted])[ends]])
    out["aupro"] = _trapezoid_upto(fpr, pro, max_fpr) / max_fpr
    return out


def pixel_auroc(masks: object, maps: object) -> float | None:
    """Pixel-level AUROC over all pixels of all images (see :func:`pixel_metrics`).

    Examples
    --------
    >>> import numpy as np
    >>> masks = np.array([[[0, 1], [0, 0]]], dtype=bool)
    >>> maps = np.array([[[0.1, 0.9], [0.2, 0.3]]], dtype=np.float32)
    >>> pixel_auroc(masks, maps)
    1.0
    """
    return pixel_metrics(masks, maps)["pixel_auroc"]


def aupro(masks: object, maps: object, *, max_fpr: float = 0.3) -> float | None:
    """Area under the per-region-overlap curve up to ``max_fpr``, normalised to [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> masks = np.zeros((1, 4, 4), dtype=bool); masks[0, :2, :2] = True
    >>> maps = masks.astype(np.float32)
    >>> aupro(masks, maps)
    1.0
    """
    return pixel_metrics(masks, maps, max_fpr=max_fpr)["aupro"]


# --------------------------------------------------------------------------- aggregation


def _mean_tree(values: Sequence[Any]) -> Any:
    """Mean over categories of floats (ignoring None) or, recursively, of dicts."""
    if all(isinstance(v, Mapping) for v in values if v is not None):
        dicts = [v for v in values if v is not None]
        if not dicts:
            return None
        keys: list[str] = []
        for d in dicts:
            keys += [k for k in d if k not in keys]
        return {k: _mean_tree([d.get(k) for d in dicts]) for k in keys}
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return float(np.mean(nums)) if nums else None


def mean_metrics(per_category: Mapping[str, Mapping[str, Any]], keys: Sequence[str]) -> dict:
    """Mean of metrics over categories.

    Parameters
    ----------
    per_category : mapping of category name to its metrics dict
    keys : sequence of str
        Metric names to average; each is a float, ``None`` or a mapping of score name to float.

    Returns
    -------
    dict
        For each key the mean over the categories where it is not ``None`` (``None`` when it is
        ``None`` everywhere); mappings are averaged entry by entry.

    Examples
    --------
    >>> mean_metrics({"a": {"x": 0.5}, "b": {"x": 1.0}}, ["x"])
    {'x': 0.75}
    """
    return {k: _mean_tree([m.get(k) for m in per_category.values()]) for k in keys}
