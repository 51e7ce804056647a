"""Synthetic-defect maps of a data set's train images, cached (issue 13's research harness).

The defect makers are the product's (:mod:`structcore.defects`, re-exported here for the
harness and older imports): ``Detector(calibration="synthetic")`` makes the same defects
(CutPaste and Perlin blends, seeds ``[seed, image index, maker index]``). This module scores
them for the ablation: :func:`load_or_compute_synthetic_maps` scores the defective images with
the *cross-fit fold banks* (each defective image with the bank of the fold that does not
contain its source image), caching the features and maps on disk like
:mod:`structcore.research.ablation`.
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

    Returns
    -------
    SyntheticMaps
    """
    from ..detector import Detector
    from . import ablation as ab

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
    if f_path.is_file():
        with np.load(f_path, allow_pickle=False) as z:
            feats = z["features"]
    else:
        if log is not None:
            log(f"[{stem}] synthetic defects: {len(makers)} x {n} images, features")
        images = []
        for i, p in enumerate(lists["train"]):
            images += defect_images(
                read_image(p), i, seed=seed, makers=makers, resize=cfg.resize, crop=cfg.crop
            )
        feats = det.features(images)
        ab._atomic_savez(f_path, features=feats)
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
