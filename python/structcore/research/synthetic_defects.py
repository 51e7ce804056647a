"""Synthetic-defect maps of a data set's train images, cached (issue 13's research harness).

The defect makers are the product's (:mod:`structcore.defects`, re-exported here for the
harness and older imports): ``Detector(calibration="synthetic")`` makes the same defects
(CutPaste and Perlin blends, seeds ``[seed, image index, maker index]``). This module scores
them for the ablation: :func:`load_or_compute_synthetic_maps` scores the defective images with
the *cross-fit fold banks* (each defective image with the bank of the fold that does not
contain its source image), caching the features and maps on disk like
:mod:`structcore.research.ablation`. Two kinds of fold banks (``crossfit_bank``, as the
detector's parameter): the harness's cached fresh fold coresets (``"coreset"``), or the final
bank without the fold's rows (``"masked"``, the product's default), where the CutPaste and
Perlin defects are exactly those :meth:`Detector.fit` makes (:meth:`Detector.defect_features`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets import read_image
from ..defects import (
    MAKERS,
    SYNTHETIC_MAKERS,
    crop_box,
    cutpaste,
    defect_images,
    make_defect,
    painter,
    perlin_blend,
    perlin_noise,
)

__all__ = [
    "MAKERS",
    "SyntheticMaps",
    "crop_box",
    "cutpaste",
    "load_or_compute_synthetic_maps",
    "make_defect",
    "painter",
    "perlin_blend",
    "perlin_noise",
]

#: Version of the makers (part of the cache key: bump when pixels change).
VERSION = 1


# --------------------------------------------------------------------------- scoring


@dataclass
class SyntheticMaps:
    """Maps of synthetic-defect images, each scored with the fold bank without its source.

    Attributes
    ----------
    maps : ndarray (n, crop, crop), float32
    max : ndarray (n,), float64
    source : ndarray (n,), int64
        Train image each defect was made on.
    maker : ndarray (n,), str
    meta : dict
    """

    maps: np.ndarray
    max: np.ndarray
    source: np.ndarray
    maker: np.ndarray
    meta: dict[str, Any]


def _cached_defect_features(
    path: Path,
    det: Any,
    train: Sequence[str],
    makers: Sequence[str],
    seed: int,
    cfg: Any,
    log: Callable[[str], None] | None,
    message: str,
) -> np.ndarray:
    """Features (len(train) * len(makers), h, w, D) of the ``makers``' defects on ``train``
    (image by image, makers in order), read from ``path`` or computed and cached there."""
    from . import ablation as ab

    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return z["features"]
    if log is not None:
        log(message)
    images = []
    for i, p in enumerate(train):
        images += defect_images(
            read_image(p), i, seed=seed, makers=makers, resize=cfg.resize, crop=cfg.crop
        )
    feats = det.features(images)
    ab._atomic_savez(path, features=feats)
    return feats


def load_or_compute_synthetic_maps(
    name: str,
    train: Sequence[str | Path],
    test: Sequence[str | Path],
    cfg: Any,
    cache_dir: str | Path,
    *,
    makers: Sequence[str] = MAKERS,
    seed: int = 0,
    threads: int | None = None,
    batch_size: int = 16,
    log: Callable[[str], None] | None = None,
    compute: bool = True,
    crossfit_bank: str = "coreset",
) -> SyntheticMaps:
    """Synthetic-defect maps of a data set's train images, cached.

    One defect per maker per train image (seed ``[seed, image index, maker index]``). The
    features of the defective images are extracted with the detector's backbone and cached
    (``synfeat__...npz``); each is scored with the cross-fit bank of the fold that does not
    hold its source image (:func:`structcore.research.ablation.load_or_compute_fold_banks`,
    the banks the cross-fitted good maps come from), so no image is ever in the bank that
    scores it. The maps are cached as ``synmaps__...npz``.

    Parameters
    ----------
    name, train, test, cfg, cache_dir
        As :func:`structcore.research.ablation.load_or_compute_maps` (``test`` only names the
        cache files; the fold banks must be cached already, i.e. the maps computed).
    makers : sequence of str
    seed : int
    threads, batch_size, log, compute
        As :func:`~structcore.research.ablation.load_or_compute_maps`.
    crossfit_bank : {"coreset", "masked"}
        ``"coreset"``: every defect made here (:func:`defect_images` per image, one backbone
        pass over all of them) and scored with the cached fresh fold coresets
        (:func:`~structcore.research.ablation.load_or_compute_fold_banks`). ``"masked"``: the
        product's path: the :data:`~structcore.defects.SYNTHETIC_MAKERS` defects are
        :meth:`Detector.defect_features` (fold by fold, the batches of ``fit``), the other
        makers' (the painter) are made here; each defect is scored, in ``fit``'s batches, with
        the final bank (cached by ``load_or_compute_maps``, with its rows' sources) minus the
        rows of its source image's fold (:func:`structcore.crossfit.masked_bank`). Rows: the
        product's defects in ``defect_features`` order, then the other makers'.

    Returns
    -------
    SyntheticMaps
    """
    from ..detector import Detector
    from . import ablation as ab

    if crossfit_bank == "masked":
        return _masked_synthetic_maps(
            name, train, test, cfg, cache_dir, makers, seed, threads, batch_size, log, compute
        )
    if crossfit_bank != "coreset":
        raise ValueError(f"crossfit_bank must be 'coreset' or 'masked'; got {crossfit_bank!r}")
    cache = Path(cache_dir)
    lists = {"train": [str(p) for p in train], "test": [str(p) for p in test]}
    key = {"makers": list(makers), "seed": seed, "version": VERSION}
    hf = ab.config_hash(cfg.feature_part(), {"train": lists["train"]}, key)
    hm = ab.config_hash(asdict(cfg), lists, key)
    stem = f"{name}__{cfg.backbone}"
    f_path = cache / f"synfeat__{stem}__{hf}.npz"
    m_path = cache / f"synmaps__{stem}__{hm}.npz"
    n = len(train)
    source = np.repeat(np.arange(n), len(makers))
    maker = np.tile(np.asarray(list(makers), dtype=str), n)
    if m_path.is_file():
        with np.load(m_path, allow_pickle=False) as z:
            return SyntheticMaps(z["maps"], z["max"], source, maker, json.loads(str(z["meta"])))
    if not compute:
        raise FileNotFoundError(f"not cached: {m_path}")
    det = Detector(
        **asdict(cfg), calibration="train", variants=False, threads=threads, batch_size=batch_size
    )
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    feats = _cached_defect_features(
        f_path,
        det,
        lists["train"],
        makers,
        seed,
        cfg,
        log,
        f"[{stem}] synthetic defects: {len(makers)} x {n} images, features",
    )
    timings["features"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    fb_path = ab.fold_banks_path(name, train, test, cfg, cache)
    if not fb_path.is_file():
        raise FileNotFoundError(f"fold banks not cached (compute the maps first): {fb_path}")
    with np.load(fb_path, allow_pickle=False) as z:
        banks = [z[f"bank{i}"] for i in range(cfg.folds)]
    folds = det.crossfit_folds(n)
    maps = np.empty((feats.shape[0], cfg.crop, cfg.crop), dtype=np.float32)
    smax = np.empty(feats.shape[0], dtype=np.float64)
    for f, b in enumerate(banks):
        idx = np.flatnonzero(folds[source] == f)
        maps[idx], smax[idx] = ab.score_with_bank(det, feats[idx], b)
    timings["maps"] = time.perf_counter() - t1
    meta = {"makers": list(makers), "seed": seed, "version": VERSION, "timings_s": timings}
    ab._atomic_savez(m_path, maps=maps, max=smax, meta=json.dumps(meta))
    return SyntheticMaps(maps, smax, source, maker, meta)


def _masked_synthetic_maps(
    name: str,
    train: Sequence[str | Path],
    test: Sequence[str | Path],
    cfg: Any,
    cache_dir: str | Path,
    makers: Sequence[str],
    seed: int,
    threads: int | None,
    batch_size: int,
    log: Callable[[str], None] | None,
    compute: bool,
) -> SyntheticMaps:
    """:func:`load_or_compute_synthetic_maps` with ``crossfit_bank="masked"``."""
    from ..crossfit import fold_parts, masked_bank
    from ..detector import Detector
    from . import ablation as ab

    makers = list(makers)
    missing = [m for m in SYNTHETIC_MAKERS if m not in makers]
    if missing:
        raise ValueError(f"crossfit_bank='masked' needs the product's makers; missing {missing}")
    extra = [m for m in makers if m not in SYNTHETIC_MAKERS]
    if seed != cfg.seed:
        raise ValueError("crossfit_bank='masked': the defect seed is the detector's (cfg.seed)")
    cache = Path(cache_dir)
    lists = {"train": [str(p) for p in train], "test": [str(p) for p in test]}
    key = {"makers": makers, "seed": seed, "version": VERSION, "crossfit_bank": "masked"}
    # the product's defect features depend on the folds (fold-by-fold backbone batches)
    pkey = {
        "product_makers": list(SYNTHETIC_MAKERS),
        "seed": seed,
        "folds": cfg.folds,
        "batch_size": batch_size,
        "version": VERSION,
    }
    hp = ab.config_hash(cfg.feature_part(), {"train": lists["train"]}, pkey)
    hx = ab.config_hash(
        cfg.feature_part(),
        {"train": lists["train"]},
        {"makers": extra, "seed": seed, "version": VERSION},
    )
    hm = ab.config_hash(asdict(cfg), lists, key)
    stem = f"{name}__{cfg.backbone}"
    m_path = cache / f"synmaps_masked__{stem}__{hm}.npz"
    if m_path.is_file():
        with np.load(m_path, allow_pickle=False) as z:
            return SyntheticMaps(
                z["maps"], z["max"], z["source"], z["maker"], json.loads(str(z["meta"]))
            )
    if not compute:
        raise FileNotFoundError(f"not cached: {m_path}")
    det = Detector(
        **asdict(cfg),
        calibration="synthetic",
        crossfit_bank="masked",
        variants=False,
        threads=threads,
        batch_size=batch_size,
    )
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    p_path = cache / f"synfeat_product__{stem}__{hp}.npz"
    if p_path.is_file():
        with np.load(p_path, allow_pickle=False) as z:
            f_prod, s_prod = z["features"], z["sources"]
    else:
        if log is not None:
            log(f"[{stem}] synthetic defects (product): {len(SYNTHETIC_MAKERS)} x {len(train)}")
        f_prod, s_prod = det.defect_features(lists["train"])
        ab._atomic_savez(p_path, features=f_prod, sources=s_prod)
    n = len(train)
    m_prod = np.tile(np.asarray(SYNTHETIC_MAKERS, dtype=str), s_prod.size // len(SYNTHETIC_MAKERS))
    feats, source, maker = f_prod, s_prod, m_prod
    if extra:
        x_path = cache / f"synfeat__{stem}__{hx}.npz"
        f_x = _cached_defect_features(
            x_path,
            det,
            lists["train"],
            extra,
            seed,
            cfg,
            log,
            f"[{stem}] synthetic defects ({', '.join(extra)}): {n} images",
        )
        feats = np.concatenate([f_prod, f_x])
        source = np.r_[s_prod, np.repeat(np.arange(n), len(extra))]
        maker = np.r_[m_prod, np.tile(np.asarray(extra, dtype=str), n)]
    timings["features"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    final = ab.load_final_bank(
        ab.bank_path(name, train, test, cfg, cache), backend=det.backend, threads=det.threads
    )
    if final is None or final.sources is None:
        raise FileNotFoundError("final bank not cached with its sources (compute the maps first)")
    maps = np.empty((feats.shape[0], cfg.crop, cfg.crop), dtype=np.float32)
    smax = np.empty(feats.shape[0], dtype=np.float64)
    for held in fold_parts(n, cfg.folds, cfg.seed)[1]:
        bank = masked_bank(final, held)
        in_fold = np.isin(source, held)
        # the product's defects in fit's batches (on_bank of crossfit_maps), then the others
        for part in (slice(0, s_prod.size), slice(s_prod.size, None)):
            idx = part.start + np.flatnonzero(in_fold[part])
            if idx.size:
                maps[idx], smax[idx] = ab.score_with_bank(det, feats[idx], bank.vectors, batch_size)
    timings["maps"] = time.perf_counter() - t1
    meta = {
        "makers": makers,
        "seed": seed,
        "version": VERSION,
        "crossfit_bank": "masked",
        "timings_s": timings,
    }
    ab._atomic_savez(m_path, maps=maps, max=smax, source=source, maker=maker, meta=json.dumps(meta))
    return SyntheticMaps(maps, smax, source, maker, meta)
