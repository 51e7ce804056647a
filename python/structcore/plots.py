"""Evaluation plots (matplotlib, Agg canvas: no display, no pyplot global state).

* :func:`plot_score_histograms`: normal vs defective image scores, one panel per score
  (max pooling next to StructCore by default);
* :func:`plot_roc_curves`: ROC curves of several image scores on one set of axes;
* :func:`overlay` / :func:`save_overlay`: an anomaly map blended over its (cropped) image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .metrics import image_auroc, roc_points

__all__ = ["overlay", "plot_roc_curves", "plot_score_histograms", "save_overlay"]


def _figure(width: float, height: float):  # type: ignore[no-untyped-def]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_score_histograms(
    labels: Sequence[int] | np.ndarray,
    scores: Mapping[str, np.ndarray],
    path: str | Path,
    *,
    names: Sequence[str] = ("max", "structcore"),
    title: str | None = None,
    bins: int = 30,
) -> Path:
    """Histograms of image scores, normal vs defective, one panel per score name.

    Parameters
    ----------
    labels : array_like of shape (n_images,), 0/1
        1 = defective.
    scores : mapping of str to ndarray of shape (n_images,)
        Image scores by name; the panels show ``names`` that are present.
    path : str or Path
        PNG file to write (parent folders are created).
    names : sequence of str
        Score names to draw, in order.
    title : str, optional
        Figure title.
    bins : int
        Histogram bins per panel (shared by both classes).

    Returns
    -------
    Path
        ``path``.
    """
    y = np.asarray(labels).astype(bool)
    shown = [n for n in names if n in scores]
    if not shown:
        raise ValueError(f"none of names {list(names)} is in scores {sorted(scores)}")
    fig = _figure(4.2 * len(shown), 3.3)
    axes = fig.subplots(1, len(shown), squeeze=False)[0]
    for ax, name in zip(axes, shown, strict=True):
        s = np.asarray(scores[name], dtype=np.float64)
        edges = np.histogram_bin_edges(s, bins=bins)
        ax.hist(s[~y], bins=edges, alpha=0.6, color="tab:blue", label=f"normal ({(~y).sum()})")
        ax.hist(s[y], bins=edges, alpha=0.6, color="tab:red", label=f"defective ({y.sum()})")
        auc = image_auroc(y.astype(int), s)
        ax.set_title(f"{name}  (AUROC {auc:.3f})" if auc is not None else name)
        ax.set_xlabel("image score")
        ax.set_ylabel("images")
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_roc_curves(
    labels: Sequence[int] | np.ndarray,
    scores: Mapping[str, np.ndarray],
    path: str | Path,
    *,
    names: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """ROC curves of several image scores on one plot, AUROC in the legend.

    Parameters
    ----------
    labels : array_like of shape (n_images,), 0/1
    scores : mapping of str to ndarray of shape (n_images,)
    path : str or Path
        PNG file to write.
    names : sequence of str, optional
        Which scores to draw (default: all, in mapping order).
    title : str, optional

    Returns
    -------
    Path
    """
    y = np.asarray(labels).astype(int)
    fig = _figure(4.8, 4.4)
    ax = fig.subplots()
    for name in names if names is not None else list(scores):
        s = np.asarray(scores[name], dtype=np.float64)
        auc = image_auroc(y, s)
        if auc is None:
            continue
        fpr, tpr = roc_points(y, s)
        ax.plot(
            fpr, tpr, lw=1.6 if name in ("max", "structcore") else 0.9, label=f"{name} {auc:.3f}"
        )
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(fontsize="x-small", loc="lower right")
    if title:
        ax.set_title(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def overlay(
    image: np.ndarray,
    amap: np.ndarray,
    *,
    vmin: float,
    vmax: float,
    alpha: float = 0.5,
    cmap: str = "jet",
) -> np.ndarray:
    """Blend a colour-mapped anomaly map over an image of the same size.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8
        The image in the map's geometry (e.g. :func:`structcore.datasets.crop_image`).
    amap : ndarray of shape (H, W), float
        Anomaly map.
    vmin, vmax : float
        Map values shown as the bottom and top of the colour scale (use the same for all images
        of a run so colours compare).
    alpha : float
        Weight of the colour map, in [0, 1].
    cmap : str
        Matplotlib colour map.

    Returns
    -------
    ndarray of shape (H, W, 3), uint8
    """
    from matplotlib import colormaps

    if image.shape[:2] != amap.shape:
        raise ValueError(f"image shape {image.shape} does not match map shape {amap.shape}")
    span = max(float(vmax) - float(vmin), 1e-12)
    norm = np.clip((np.asarray(amap, dtype=np.float64) - vmin) / span, 0.0, 1.0)
    colour = colormaps[cmap](norm)[..., :3] * 255.0
    out = (1.0 - alpha) * image.astype(np.float64) + alpha * colour
    return np.rint(np.clip(out, 0, 255)).astype(np.uint8)


def save_overlay(
    path: str | Path,
    image: np.ndarray,
    amap: np.ndarray,
    *,
    vmin: float,
    vmax: float,
    mask: np.ndarray | None = None,
) -> Path:
    """Write ``[image | overlay]`` side by side as a PNG (the mask outline in white if given).

    Parameters
    ----------
    path : str or Path
    image : ndarray of shape (H, W, 3), uint8
    amap : ndarray of shape (H, W), float
    vmin, vmax : float
        Colour scale (see :func:`overlay`).
    mask : ndarray of shape (H, W), bool, optional
        Ground truth; its boundary is drawn on the overlay.

    Returns
    -------
    Path
    """
    over = overlay(image, amap, vmin=vmin, vmax=vmax)
    if mask is not None and mask.any():
        from scipy import ndimage

        edge = mask & ~ndimage.binary_erosion(mask)
        over[edge] = 255
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([image, over], axis=1)).save(path)
    return path
