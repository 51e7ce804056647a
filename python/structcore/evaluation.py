"""Evaluate a detector on a data set and write the reports (what ``structcore eval`` runs).

:func:`evaluate` fits a :class:`structcore.Detector` on the training images of a
:class:`~structcore.datasets.DatasetSplit`, scores its test images in chunks, and computes:

* image AUROC and F1-max for every image score of
  :meth:`~structcore.Detector.variant_scores` (``max``, ``structcore``, ``struct_only`` and the
  named variants such as ``paper/l2/auto/crossfit``);
* pixel AUROC, AUPRO up to 30% FPR and pixel F1-max on the maps (normal test images count as
  all-zero masks; defective images without a mask file are left out of the pixel metrics;
  ``None`` when no defective test image has a mask);
* the decision (``is_anomalous``, the model's stored threshold) as the true- and false-positive
  rates on the test set.

:func:`write_report` writes ``metrics.json``, ``results.md`` and, per category, ``scores.csv``,
``histograms.png`` (max pooling vs StructCore) and ``roc.png``.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .datasets import DatasetSplit, Sample, crop_image, load_mask, read_image
from .metrics import image_metrics, mean_metrics, pixel_metrics

__all__ = [
    "EvalResult",
    "evaluate",
    "markdown_report",
    "metrics_document",
    "overlay_scale",
    "write_overlays",
    "write_report",
    "write_scores_csv",
]

#: Score names drawn first (and in the histograms).
#: ``structcore`` is the detector's configured score (max pooling at the default ``lam=0``),
#: ``paper/l2/auto/train`` the paper's StructCore hybrid (present when ``variants=True``).
HEADLINE_SCORES: tuple[str, ...] = ("max", "structcore", "paper/l2/auto/train", "struct_only")
_AVERAGED = ("image_auroc", "f1_max", "pixel_auroc", "aupro", "pixel_f1_max", "decision")


@dataclass
class EvalResult:
    """Scores and metrics of one category.

    Attributes
    ----------
    name : str
        Category.
    samples : tuple of Sample
        The test samples, in score order.
    labels : ndarray of shape (n_test,), int64
    scores : dict of str to ndarray of shape (n_test,), float64
        Image scores by name (``max``, ``structcore``, ``struct_only``, variants).
    is_anomalous : ndarray of shape (n_test,), bool
        The detector's decision.
    metrics : dict
        JSON-ready metrics (see :func:`evaluate`).
    maps : ndarray of shape (n_test, crop, crop), float32, or None
        Kept only with ``keep_maps=True``.
    """

    name: str
    samples: tuple[Sample, ...]
    labels: np.ndarray
    scores: dict[str, np.ndarray]
    is_anomalous: np.ndarray
    metrics: dict[str, Any]
    maps: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        w, h = im.size
    return h, w


def _decision_stats(labels: np.ndarray, decided: np.ndarray) -> dict[str, float | None]:
    pos, neg = labels == 1, labels == 0
    return {
        "tpr": float(decided[pos].mean()) if pos.any() else None,
        "fpr": float(decided[neg].mean()) if neg.any() else None,
        "accuracy": float((decided == pos).mean()) if labels.size else None,
    }


def evaluate(
    detector: Any,
    dataset: DatasetSplit,
    *,
    fit: bool = True,
    batch_size: int | None = None,
    chunk: int = 64,
    max_fpr: float = 0.3,
    keep_maps: bool = False,
    progress: bool = False,
) -> EvalResult:
    """Fit (optionally) and score a detector on one category.

    Parameters
    ----------
    detector : structcore.Detector
        An unfitted detector (or a fitted one with ``fit=False``).
    dataset : DatasetSplit
        Training images and labelled test samples.
    fit : bool
        Fit on ``dataset.train`` first.
    batch_size : int, optional
        Passed to ``predict``.
    chunk : int
        Test images per ``predict`` call (bounds memory: the maps of one chunk).
    max_fpr : float
        FPR limit of AUPRO.
    keep_maps : bool
        Keep all test maps in the result (``n_test * crop * crop * 4`` bytes).
    progress : bool
        Show a tqdm bar over the test images.

    Returns
    -------
    EvalResult
        ``metrics`` holds ``image_auroc`` and ``f1_max`` (mappings from score name to value),
        ``pixel_auroc``, ``aupro``, ``pixel_f1_max`` (float or None), ``decision`` (tpr, fpr,
        accuracy of ``is_anomalous``), ``counts``, ``split``, ``threshold`` and ``timing_s``.
    """
    from tqdm.auto import tqdm

    timing: dict[str, float] = {}
    if fit:
        t0 = time.perf_counter()
        detector.fit([str(p) for p in dataset.train])
        timing["fit"] = time.perf_counter() - t0
    inner_progress = getattr(detector, "progress", None)
    if progress and inner_progress:
        detector.progress = False  # one bar over the test set instead of one per chunk
    resize, crop = int(detector.resize), int(detector.crop)
    samples = dataset.test
    labels = np.array([s.label for s in samples], dtype=np.int64)
    score_parts: dict[str, list[np.ndarray]] = {}
    decided: list[np.ndarray] = []
    pix_maps: list[np.ndarray] = []
    pix_masks: list[np.ndarray] = []
    all_maps: list[np.ndarray] = []
    t_pred = t_var = 0.0
    bar = tqdm(total=len(samples), desc=f"{dataset.name}: test", unit="img", disable=not progress)
    for start in range(0, len(samples), chunk):
        part = samples[start : start + chunk]
        t0 = time.perf_counter()
        pred = detector.predict([str(s.image) for s in part], batch_size=batch_size)
        t1 = time.perf_counter()
        variants = dict(detector.variant_scores(pred.maps, pred.score_max))
        t_pred += t1 - t0
        t_var += time.perf_counter() - t1
        variants.setdefault("max", pred.score_max)
        variants.setdefault("structcore", pred.score)
        variants.setdefault("struct_only", pred.score_struct)
        for name, values in variants.items():
            score_parts.setdefault(name, []).append(np.asarray(values, dtype=np.float64))
        decided.append(np.asarray(pred.is_anomalous, dtype=bool))
        maps = np.asarray(pred.maps, dtype=np.float32)
        for i, s in enumerate(part):
            if s.label == 0 or s.mask is not None:
                size = _image_size(s.image)
                pix_masks.append(load_mask(s.mask, image_size=size, resize=resize, crop=crop))
                pix_maps.append(maps[i])
        if keep_maps:
            all_maps.append(maps)
        bar.update(len(part))
    bar.close()
    if progress and inner_progress:
        detector.progress = inner_progress
    timing["predict"] = t_pred
    timing["variant_scores"] = t_var
    scores = {k: np.concatenate(v) for k, v in score_parts.items()}
    scores = {
        **{k: scores[k] for k in HEADLINE_SCORES if k in scores},
        **{k: v for k, v in scores.items() if k not in HEADLINE_SCORES},
    }
    is_anom = np.concatenate(decided) if decided else np.zeros(0, dtype=bool)
    metrics: dict[str, Any] = image_metrics(labels, scores)
    has_pixel_gt = any(s.label == 1 and s.mask is not None for s in samples)
    if has_pixel_gt:
        t0 = time.perf_counter()
        metrics.update(pixel_metrics(np.stack(pix_masks), np.stack(pix_maps), max_fpr=max_fpr))
        timing["pixel_metrics"] = time.perf_counter() - t0
    else:
        metrics.update({"pixel_auroc": None, "aupro": None, "pixel_f1_max": None})
    metrics["decision"] = _decision_stats(labels, is_anom)
    metrics["counts"] = {**dataset.counts(), "pixel_metric_images": len(pix_maps)}
    metrics["split"] = dataset.split
    threshold = getattr(detector, "decision_threshold_", None)
    metrics["threshold"] = None if threshold is None else float(threshold)
    lam = getattr(detector, "lambda_", None)
    if isinstance(lam, (int, float, np.floating)):
        metrics["lambda"] = float(lam)
    metrics["timing_s"] = {k: round(v, 3) for k, v in timing.items()}
    return EvalResult(
        name=dataset.name,
        samples=samples,
        labels=labels,
        scores=scores,
        is_anomalous=is_anom,
        metrics=metrics,
        maps=np.concatenate(all_maps) if keep_maps and all_maps else None,
    )


# --------------------------------------------------------------------------- reports


def _clean(x: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/Inf to None, Paths to str."""
    if isinstance(x, Mapping):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    return x


def metrics_document(
    results: Sequence[EvalResult], config: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ``metrics.json`` document: the mean over categories at the top level.

    Returns
    -------
    dict
        ``image_auroc``, ``f1_max`` (score name -> value), ``pixel_auroc``, ``aupro``,
        ``pixel_f1_max``, ``decision``: means over categories (equal to the category's own
        values when there is one); ``counts`` summed; ``categories``; ``per_category``; ``config``.
    """
    from . import __version__

    per = {r.name: r.metrics for r in results}
    doc: dict[str, Any] = {"structcore_version": __version__, "categories": list(per)}
    doc.update(mean_metrics(per, _AVERAGED))
    counts: dict[str, int] = {}
    for m in per.values():
        for k, v in m["counts"].items():
            counts[k] = counts.get(k, 0) + int(v)
    doc["counts"] = counts
    doc["per_category"] = per
    doc["config"] = dict(config or {})
    return _clean(doc)


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.4f}"


def markdown_report(
    doc: Mapping[str, Any], title: str = "structcore evaluation", *, compact: bool = False
) -> str:
    """A Markdown summary of a :func:`metrics_document`: image and pixel metric tables.

    ``compact=True`` keeps only the headline scores (max, structcore, struct_only).
    """
    cats: list[str] = list(doc["categories"])
    per = doc["per_category"]
    many = len(cats) > 1
    cols = [*cats, "mean"] if many else cats
    lines = [f"# {title}", ""]
    cfg = doc.get("config", {})
    det = cfg.get("detector", {}) if isinstance(cfg, Mapping) else {}
    if det:
        keys = ("backbone", "coreset_ratio", "descriptor", "norm", "lam", "calibration")
        lines.append("Detector: " + ", ".join(f"{k}={det[k]}" for k in keys if k in det) + ".")
    for c in cats:
        n = per[c]["counts"]
        lines.append(
            f"{c}: {n['train']} train, {n['test']} test ({n['test_good']} normal, "
            f"{n['test_defective']} defective, {n['test_defective_with_mask']} with masks); "
            f"split: {per[c]['split']}."
        )
    lines += ["", "## Image AUROC (F1-max)", ""]
    lines.append("| score | " + " | ".join(cols) + " |")
    lines.append("|---" * (len(cols) + 1) + "|")
    names = list(doc["image_auroc"])
    if compact:
        names = [n for n in names if n in HEADLINE_SCORES]
    for name in names:
        cells = []
        for c in cols:
            m = doc if c == "mean" or not many else per[c]
            cells.append(f"{_fmt(m['image_auroc'].get(name))} ({_fmt(m['f1_max'].get(name))})")
        bold = name in ("max", "structcore")
        label = f"**{name}**" if bold else name
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Pixel level and decision", ""]
    lines.append("| metric | " + " | ".join(cols) + " |")
    lines.append("|---" * (len(cols) + 1) + "|")
    for key, label in (
        ("pixel_auroc", "pixel AUROC"),
        ("aupro", "AUPRO (FPR <= 0.3)"),
        ("pixel_f1_max", "pixel F1-max"),
    ):
        cells = [_fmt((doc if c == "mean" or not many else per[c])[key]) for c in cols]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for key in ("tpr", "fpr"):
        cells = []
        for c in cols:
            d = (doc if c == "mean" or not many else per[c]).get("decision") or {}
            cells.append(_fmt(d.get(key)))
        lines.append(f"| decision {key.upper()} (is_anomalous) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_scores_csv(path: str | Path, result: EvalResult) -> Path:
    """Per-image scores of one category: image, label, defect, decision, one column per score."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(result.scores)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "label", "defect", "is_anomalous", *names])
        for i, s in enumerate(result.samples):
            row = [str(s.image), s.label, s.defect, int(result.is_anomalous[i])]
            w.writerow(row + [f"{result.scores[n][i]:.6g}" for n in names])
    return path


def overlay_scale(detector: Any, maps: np.ndarray | None = None) -> tuple[float, float]:
    """Colour scale ``(vmin, vmax)`` of map overlays, shared by all images of a run.

    With a fitted :class:`~structcore.Detector`: ``0.5 t`` to ``2 t``, where ``t`` is its
    pixel threshold (the ``pixel_quantile`` quantile of the train-good calibration pixels), so
    pixels above what defect-free training images reach show in the upper two thirds of the
    scale. Otherwise: the minimum and the 99.9th percentile of ``maps``.
    """
    t = getattr(detector, "pixel_threshold_", None)
    if t is not None and float(t) > 0:
        return 0.5 * float(t), 2.0 * float(t)
    if maps is None:
        raise ValueError("overlay_scale needs a fitted detector or maps")
    return float(np.min(maps)), float(np.quantile(maps, 0.999))


def write_overlays(
    folder: str | Path,
    result: EvalResult,
    detector: Any,
    *,
    per_class: int = 3,
) -> list[Path]:
    """Overlay PNGs for the first ``per_class`` normal and defective test images of a result.

    Needs ``result.maps`` (``evaluate(..., keep_maps=True)``); the colour scale is
    :func:`overlay_scale`; the ground-truth outline is drawn in white.
    """
    from .plots import save_overlay

    if result.maps is None:
        raise ValueError("write_overlays needs an EvalResult evaluated with keep_maps=True")
    resize, crop = int(detector.resize), int(detector.crop)
    vmin, vmax = overlay_scale(detector, result.maps)
    out: list[Path] = []
    for label in (0, 1):
        idx = [i for i, s in enumerate(result.samples) if s.label == label][:per_class]
        for i in idx:
            s = result.samples[i]
            img = crop_image(read_image(s.image), resize=resize, crop=crop)
            mask = None
            if s.mask is not None:
                size = _image_size(s.image)
                mask = load_mask(s.mask, image_size=size, resize=resize, crop=crop)
            name = f"{s.defect}_{s.image.stem}.png"
            out.append(
                save_overlay(
                    Path(folder) / name, img, result.maps[i], vmin=vmin, vmax=vmax, mask=mask
                )
            )
    return out


def write_report(
    out: str | Path,
    results: Sequence[EvalResult],
    config: Mapping[str, Any] | None = None,
    *,
    plots: bool = True,
    title: str = "structcore evaluation",
) -> dict[str, Any]:
    """Write ``metrics.json``, ``results.md`` and per-category CSVs and plots under ``out``.

    Returns
    -------
    dict
        The metrics document (see :func:`metrics_document`).
    """
    from .plots import plot_roc_curves, plot_score_histograms

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = metrics_document(results, config)
    for r in results:
        folder = out / r.name
        write_scores_csv(folder / "scores.csv", r)
        if plots and r.labels.any() and not r.labels.all():
            plot_score_histograms(
                r.labels, r.scores, folder / "histograms.png", names=HEADLINE_SCORES, title=r.name
            )
            plot_roc_curves(
                r.labels,
                r.scores,
                folder / "roc.png",
                names=[n for n in HEADLINE_SCORES if n in r.scores],
                title=f"{r.name}: image ROC",
            )
    (out / "metrics.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    (out / "results.md").write_text(markdown_report(doc, title), encoding="utf-8")
    return doc
