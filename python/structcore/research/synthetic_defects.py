"""Synthetic defects on train-good images, for label-free calibration of the image score (issue 13).

The train-good images are all a user has; this module makes defective versions of them,
seeded and deterministic, so that an image score can be fitted on cross-fitted good maps
versus maps of synthetic defects (:mod:`structcore.research.learned_score`), without any real
defect label. Three makers (:data:`MAKERS`):

* ``"cutpaste"``: CutPaste (Li et al., CVPR 2021): a patch of the same image, with colour
  jitter (brightness, contrast), pasted elsewhere; half of the draws are the "scar" variant
  (a thin, long, rotated patch);
* ``"perlin"``: a DRAEM-like blend (Zavrtanik et al., ICCV 2021): a thresholded Perlin-noise
  mask through which a foreign texture (a :func:`structcore.synthetic.clean_texture` of a
  random category, or the image itself flipped and brightness-shifted) is blended in;
* ``"painter"``: the project's own defect painter :func:`structcore.synthetic.draw_defect`
  (scratch, spot, crack) on the centre-crop square.

Defects are placed inside the detector's centre crop (:func:`crop_box`: the ``resize`` /
``crop`` preprocessing mapped back to the original pixels), and sizes are relative to it, so
they survive the preprocessing at any image size. Grey images (three equal channels) get
grey defects. Every function takes a seed and returns the same pixels for the same seed.

:func:`load_or_compute_synthetic_maps` scores the defective images with the *cross-fit fold
banks* (each defective image with the bank of the fold that does not contain its source
image), caching the features and maps on disk like :mod:`structcore.research.ablation`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..datasets import crop_geometry, read_image
from ..synthetic import CATEGORIES, DEFECTS, clean_texture, draw_defect

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

#: Defect makers, in the order of their seed index.
MAKERS: tuple[str, ...] = ("cutpaste", "perlin", "painter")
#: Version of the makers (part of the cache key: bump when pixels change).
VERSION = 1


def crop_box(height: int, width: int, resize: int = 256, crop: int = 224) -> tuple[int, int, int]:
    """The detector's centre crop in original pixels: ``(top, left, side)`` of a square.

    ``Resize(resize)`` + ``CenterCrop(crop)`` (:func:`structcore.datasets.crop_geometry`)
    mapped back to the original image, clipped to it.
    """
    new_h, new_w, top, left = crop_geometry(height, width, resize, crop)
    sy, sx = height / new_h, width / new_w
    t = int(np.clip(round(top * sy), 0, height - 1))
    le = int(np.clip(round(left * sx), 0, width - 1))
    side = int(min(round(crop * sy), round(crop * sx), height - t, width - le))
    return t, le, max(side, 2)


def _is_grey(image: np.ndarray) -> bool:
    return bool(
        np.array_equal(image[..., 0], image[..., 1])
        and np.array_equal(image[..., 0], image[..., 2])
    )


def _finish(image: np.ndarray, out: np.ndarray, grey: bool) -> np.ndarray:
    if grey:
        out = np.repeat(out.mean(axis=2, keepdims=True), 3, axis=2)
    return np.rint(np.clip(out, 0.0, 255.0)).astype(np.uint8)


def perlin_noise(
    height: int, width: int, res: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """2-D Perlin gradient noise (Perlin 2002's quintic fade), float64 (height, width).

    Parameters
    ----------
    height, width : int
    res : (int, int)
        Number of noise periods along y and x (>= 1).
    rng : numpy.random.Generator
        Draws the lattice gradients.
    """
    ry, rx = max(1, int(res[0])), max(1, int(res[1]))
    ang = rng.uniform(0.0, 2.0 * np.pi, size=(ry + 1, rx + 1))
    gy, gx = np.sin(ang), np.cos(ang)
    y = np.linspace(0.0, ry, height, endpoint=False)
    x = np.linspace(0.0, rx, width, endpoint=False)
    yi, xi = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = (y - yi)[:, None], (x - xi)[None, :]
    Y, X = yi[:, None], xi[None, :]

    def dot(dy: int, dx: int) -> np.ndarray:
        return gx[Y + dy, X + dx] * (fx - dx) + gy[Y + dy, X + dx] * (fy - dy)

    def fade(t: np.ndarray) -> np.ndarray:
        return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)

    uy, ux = fade(fy), fade(fx)
    top = dot(0, 0) * (1 - ux) + dot(0, 1) * ux
    bot = dot(1, 0) * (1 - ux) + dot(1, 1) * ux
    return top * (1 - uy) + bot * uy


def cutpaste(
    image: np.ndarray, rng: np.random.Generator, box: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """CutPaste (rectangle or scar) inside ``box``; returns (uint8 image, bool mask)."""
    t, le, side = box
    img = image.astype(np.float64)
    grey = _is_grey(image)
    if rng.random() < 0.5:  # rectangle: 1-6% of the crop area, aspect ratio 0.3-3.3
        area = rng.uniform(0.01, 0.06) * side * side
        ar = np.exp(rng.uniform(np.log(0.3), np.log(3.3)))
        ph = int(np.clip(round(np.sqrt(area * ar)), 2, side - 1))
        pw = int(np.clip(round(np.sqrt(area / ar)), 2, side - 1))
        angle = 0.0
    else:  # scar: width 2-6%, length 10-25% of the crop side, any angle
        ph = int(np.clip(round(rng.uniform(0.10, 0.25) * side), 2, side - 1))
        pw = int(np.clip(round(rng.uniform(0.02, 0.06) * side), 2, side - 1))
        angle = float(rng.uniform(0.0, 180.0))
    sy = t + int(rng.integers(0, side - ph + 1))
    sx = le + int(rng.integers(0, side - pw + 1))
    patch = img[sy : sy + ph, sx : sx + pw].copy()
    # colour jitter: brightness +-10% of the range, contrast 0.8-1.2 about the patch mean
    m = patch.mean(axis=(0, 1), keepdims=True)
    patch = (patch - m) * rng.uniform(0.8, 1.2) + m + rng.uniform(-0.1, 0.1) * 255.0
    pmask = np.ones((ph, pw), dtype=np.float64)
    if angle:
        patch = ndimage.rotate(patch, angle, axes=(0, 1), reshape=True, order=1)
        pmask = ndimage.rotate(pmask, angle, reshape=True, order=1)
        ph, pw = pmask.shape
        if ph >= side or pw >= side:
            patch = patch[: side - 1, : side - 1]
            pmask = pmask[: side - 1, : side - 1]
            ph, pw = pmask.shape
    dy = t + int(rng.integers(0, side - ph + 1))
    dx = le + int(rng.integers(0, side - pw + 1))
    out = img.copy()
    a = np.clip(pmask, 0.0, 1.0)[:, :, None]
    region = out[dy : dy + ph, dx : dx + pw]
    out[dy : dy + ph, dx : dx + pw] = region * (1 - a) + patch * a
    mask = np.zeros(image.shape[:2], dtype=bool)
    mask[dy : dy + ph, dx : dx + pw] = pmask >= 0.5
    return _finish(image, out, grey), mask


def perlin_blend(
    image: np.ndarray, rng: np.random.Generator, box: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """A foreign texture blended through a Perlin mask (1-8% of the crop) inside ``box``."""
    t, le, side = box
    img = image.astype(np.float64)
    grey = _is_grey(image)
    s = 2 ** int(rng.integers(1, 5))  # 2..16 periods across the crop
    noise = perlin_noise(side, side, (s, s), rng)
    frac = rng.uniform(0.01, 0.08)
    m = noise > np.quantile(noise, 1.0 - frac)
    # keep the largest blob and a few neighbours: at most 3 connected components
    lab, n = ndimage.label(m)
    if n > 3:
        sizes = ndimage.sum(m, lab, index=np.arange(1, n + 1))
        keep = 1 + np.argsort(sizes)[::-1][:3]
        m = np.isin(lab, keep)
    if rng.random() < 0.5:
        cat = CATEGORIES[int(rng.integers(0, len(CATEGORIES)))]
        src = clean_texture(cat, side, seed=[int(v) for v in rng.integers(0, 2**31, size=2)])
        src = src * 255.0
    else:
        src = img[t : t + side, le : le + side][::-1, ::-1] + rng.uniform(-0.2, 0.2) * 255.0
    if grey:
        src = np.repeat(src.mean(axis=2, keepdims=True), 3, axis=2)
    a = (rng.uniform(0.3, 1.0) * m)[:, :, None]
    out = img.copy()
    region = out[t : t + side, le : le + side]
    out[t : t + side, le : le + side] = region * (1 - a) + src * a
    mask = np.zeros(image.shape[:2], dtype=bool)
    mask[t : t + side, le : le + side] = m
    return _finish(image, out, grey), mask


def painter(
    image: np.ndarray, rng: np.random.Generator, box: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The project's painter (:func:`structcore.synthetic.draw_defect`) on the crop square."""
    t, le, side = box
    grey = _is_grey(image)
    region = image[t : t + side, le : le + side].astype(np.float64) / 255.0
    defect = DEFECTS[int(rng.integers(0, len(DEFECTS)))]
    drawn, cov = draw_defect(region, defect, seed=[int(v) for v in rng.integers(0, 2**31, size=2)])
    out = image.astype(np.float64)
    out[t : t + side, le : le + side] = drawn * 255.0
    mask = np.zeros(image.shape[:2], dtype=bool)
    mask[t : t + side, le : le + side] = cov >= 0.5
    return _finish(image, out, grey), mask


_MAKERS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "cutpaste": cutpaste,
    "perlin": perlin_blend,
    "painter": painter,
}


def make_defect(
    image: np.ndarray,
    maker: str,
    *,
    seed: int | Sequence[int] = 0,
    resize: int = 256,
    crop: int = 224,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic defect on ``image``.

    Parameters
    ----------
    image : ndarray (H, W, 3), uint8
    maker : one of :data:`MAKERS`
    seed : int or sequence of int
        Seed of ``numpy.random.default_rng``: same seed, same pixels.
    resize, crop : int
        The detector's preprocessing (the defect lies inside its centre crop).

    Returns
    -------
    image : ndarray (H, W, 3), uint8
        Equal to the input outside the mask's neighbourhood.
    mask : ndarray (H, W), bool
        Pixels the defect covers (non-empty).
    """
    if maker not in _MAKERS:
        raise ValueError(f"maker must be one of {MAKERS}; got {maker!r}")
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8; got {img.shape} {img.dtype}")
    box = crop_box(img.shape[0], img.shape[1], resize, crop)
    return _MAKERS[maker](img, np.random.default_rng(seed), box)


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
            img = read_image(p)
            for mk in makers:
                images.append(
                    make_defect(
                        img, mk, seed=[seed, i, MAKERS.index(mk)], resize=cfg.resize, crop=cfg.crop
                    )[0]
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
