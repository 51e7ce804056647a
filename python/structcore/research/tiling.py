"""Tiled inference for elongated parts (issue 13, item 3): research, not the product.

The product preprocesses every image with ``Resize(resize)`` + ``CenterCrop(crop)``, so the
ends of an elongated part (Magnetic Tile's tiles are up to 2.8:1) are never seen. Here:

1. the image is resized so its **shorter** side is ``size`` (torchvision ``Resize(size)``,
   bilinear, antialiased: exactly :func:`structcore.images.preprocess_one`'s resize), giving
   ``H x W`` with ``min(H, W) = size`` and the long side ``int(size * long / short)``;
2. the long side is cut into ``n = ceil(L / size)`` square ``size x size`` tiles whose
   offsets are evenly spaced from 0 to ``L - size`` (:func:`tile_offsets`): they cover the
   image exactly and overlap where ``L`` is not a multiple of ``size``;
3. every tile goes *whole* through the detector (``resize = crop = size``: the detector's own
   resize is then the identity and its centre crop the whole tile), using only the
   :class:`~structcore.Detector`'s public pieces: :meth:`~structcore.Detector.features`,
   :meth:`~structcore.Detector.fit_features` (the bank of all train tiles),
   :meth:`~structcore.Detector.calibration_maps` (``"train"``) and
   :meth:`~structcore.Detector.anomaly_maps`;
4. the tile maps (already upsampled and blurred per tile, METHOD.md §2) are stitched into one
   ``H x W`` map of the whole image, averaging where tiles overlap (:func:`stitch`);
5. image scores come from the stitched map: ``max`` and the descriptor phi (the product's
   :class:`~structcore.descriptor.Descriptor`, whose C++ kernel takes rectangular maps; every
   paper component is normalised per pixel, so maps of different lengths are comparable),
   calibrated on the stitched maps of the train images exactly as the variants of
   :mod:`structcore.research.variants` calibrate (:func:`variant_scores_from_phi`).

Maps of different images have different lengths, so they are kept as a list, and only
variants defined from (max, phi) are offered (no per-pixel reference maps).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "TileLayout",
    "TiledMaps",
    "fit_tiled",
    "layout_for",
    "resized_shape",
    "stitch",
    "tile_offsets",
    "tiled_maps",
    "variant_scores_from_phi",
]

#: Variants computed from (max, phi of the paper's three components) with same-train
#: calibration; names as in :data:`structcore.research.variants.VARIANTS`.
TILED_VARIANTS = (
    "max",
    "paper/l2/auto/train",
    "paper/linf/auto/train",
    "paper/l2/0.05/train",
    "struct/paper/l2/train",
    "fullcov/auto/train",
)


# --------------------------------------------------------------------------- geometry


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(H, W) after torchvision's ``Resize(size)``: shorter side ``size``, long side truncated."""
    if min(height, width) < 1 or size < 1:
        raise ValueError(f"need positive sizes; got {height} x {width}, size {size}")
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def tile_offsets(length: int, size: int) -> np.ndarray:
    """Start offsets of ``ceil(length / size)`` tiles of ``size`` evenly spaced over ``length``.

    The first tile starts at 0, the last ends at ``length``; consecutive tiles overlap by
    ``(n * size - length) / (n - 1)`` pixels (rounded), never leave a gap.

    Parameters
    ----------
    length : int >= size
    size : int >= 1

    Returns
    -------
    ndarray (n,), int64, non-decreasing
    """
    if size < 1 or length < size:
        raise ValueError(f"need length >= size >= 1; got length {length}, size {size}")
    n = math.ceil(length / size)
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    return np.rint(np.linspace(0.0, float(length - size), n)).astype(np.int64)


@dataclass(frozen=True)
class TileLayout:
    """Where the tiles of one resized image lie.

    Attributes
    ----------
    height, width : int
        Size of the resized image (the stitched map's size).
    size : int
        Tile side.
    axis : int
        The long axis (0: rows, tiles stacked vertically; 1: columns).
    offsets : tuple of int
        Tile starts along ``axis``.
    """

    height: int
    width: int
    size: int
    axis: int
    offsets: tuple[int, ...]

    @property
    def n_tiles(self) -> int:
        return len(self.offsets)

    def box(self, i: int) -> tuple[slice, slice]:
        """(rows, cols) slices of tile ``i`` in the resized image."""
        o = self.offsets[i]
        if self.axis == 0:
            return slice(o, o + self.size), slice(0, self.size)
        return slice(0, self.size), slice(o, o + self.size)


def layout_for(height: int, width: int, size: int) -> TileLayout:
    """The tiles of an already resized ``height x width`` image (``min(height, width) == size``)."""
    if min(height, width) != size:
        raise ValueError(f"the shorter side must be {size}; got {height} x {width}")
    axis = 0 if height > width else 1
    length = max(height, width)
    return TileLayout(height, width, size, axis, tuple(int(o) for o in tile_offsets(length, size)))


def stitch(tile_maps: np.ndarray, layout: TileLayout) -> np.ndarray:
    """One map of the whole image from its tiles' maps, averaged where tiles overlap.

    Parameters
    ----------
    tile_maps : ndarray (n_tiles, size, size)
    layout : TileLayout

    Returns
    -------
    ndarray (height, width), float32
    """
    tile_maps = np.asarray(tile_maps)
    if tile_maps.shape != (layout.n_tiles, layout.size, layout.size):
        raise ValueError(
            f"tile_maps must be ({layout.n_tiles}, {layout.size}, {layout.size}); "
            f"got {tile_maps.shape}"
        )
    acc = np.zeros((layout.height, layout.width), dtype=np.float64)
    cnt = np.zeros((layout.height, layout.width), dtype=np.float64)
    for i in range(layout.n_tiles):
        r, c = layout.box(i)
        acc[r, c] += tile_maps[i]
        cnt[r, c] += 1.0
    if (cnt == 0).any():  # pragma: no cover - tile_offsets always covers
        raise AssertionError("tiles do not cover the image")
    return (acc / cnt).astype(np.float32)


def _resized_tensor(image: object, size: int) -> Any:
    """(3, H, W) float32 in [0, 1]: the image resized as :func:`preprocess_one` resizes it."""
    import torch
    import torchvision.transforms.v2.functional as tvf

    from ..images import to_float_rgb

    arr = to_float_rgb(image, name=str(image))
    t = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    t = tvf.resize(t, [size], interpolation=tvf.InterpolationMode.BILINEAR, antialias=True)
    # the antialiased resize of a [0, 1] image can leave float rounding just outside [0, 1]
    # (e.g. 1 + 1e-7), which the detector's input check refuses: clamp (a no-op otherwise)
    return t.clamp_(0.0, 1.0)


def cut_tiles(image: object, size: int) -> tuple[Any, TileLayout]:
    """Tiles (n, 3, size, size) float32 in [0, 1] of one image and their layout."""
    import torch

    t = _resized_tensor(image, size)
    lay = layout_for(int(t.shape[1]), int(t.shape[2]), size)
    if lay.n_tiles and t.shape[1:] != (lay.height, lay.width):  # pragma: no cover
        raise AssertionError("layout does not match the resized image")
    tiles = torch.stack([t[:, r, c] for r, c in (lay.box(i) for i in range(lay.n_tiles))])
    return tiles.contiguous(), lay


# --------------------------------------------------------------------------- pipeline


@dataclass
class TiledMaps:
    """Stitched maps of a set of images.

    Attributes
    ----------
    maps : list of ndarray (H_i, W_i), float32
    max : ndarray (n,), float64
    layouts : list of TileLayout
    timings_s : dict of str to float
    """

    maps: list[np.ndarray]
    max: np.ndarray
    layouts: list[TileLayout]
    timings_s: dict[str, float]


def _features_of(det: Any, images: Sequence[object], size: int, chunk: int) -> Any:
    """Yield (features of the chunk's tiles, layouts, tiles per image) per chunk of images."""
    import torch

    for s in range(0, len(images), chunk):
        tiles, lays = [], []
        for im in images[s : s + chunk]:
            t, lay = cut_tiles(im, size)
            tiles.append(t)
            lays.append(lay)
        yield det.features(torch.cat(tiles)), lays


def _stitch_all(tile_maps: np.ndarray, lays: Sequence[TileLayout]) -> list[np.ndarray]:
    out, i = [], 0
    for lay in lays:
        out.append(stitch(tile_maps[i : i + lay.n_tiles], lay))
        i += lay.n_tiles
    return out


def fit_tiled(
    train: Sequence[object],
    *,
    size: int = 224,
    backbone: str = "mobilenet_v2",
    threads: int | None = 1,
    chunk: int = 16,
    log: Callable[[str], None] | None = None,
    **params: Any,
) -> tuple[Any, TiledMaps]:
    """Fit a detector on every tile of the train images; stitched same-train maps.

    Parameters
    ----------
    train : sequence of images (paths, arrays, ...)
    size : int
        Tile side (= the detector's ``resize`` and ``crop``).
    backbone : str
    threads : int or None
    chunk : int
        Images per feature/map batch.
    log : callable or None
    **params
        Further :class:`~structcore.Detector` parameters (library defaults otherwise).

    Returns
    -------
    detector : structcore.Detector
        Fitted on the features of all train tiles (bank of all of them).
    cal : TiledMaps
        Stitched maps of the train images against that bank (``"train"`` calibration maps:
        each tile against the bank that contains it, then stitched).
    """
    from ..detector import Detector

    det = Detector(
        backbone,
        resize=size,
        crop=size,
        calibration="train",
        variants=False,
        threads=threads,
        **params,
    )
    t0 = time.perf_counter()
    feats, lays = [], []
    for f, lay in _features_of(det, list(train), size, chunk):
        feats.append(f)
        lays.extend(lay)
    f_train = np.concatenate(feats)
    t1 = time.perf_counter()
    if log:
        log(f"tiled fit: {f_train.shape[0]} tiles of {len(lays)} images, features {t1 - t0:.1f} s")
    det.fit_features(f_train)
    t2 = time.perf_counter()
    tile_maps, _ = det.calibration_maps(f_train, "train")
    maps = _stitch_all(tile_maps, lays)
    smax = np.array([float(m.max()) for m in maps])
    t3 = time.perf_counter()
    timings = {"features": t1 - t0, "fit_features": t2 - t1, "calibration_train": t3 - t2}
    return det, TiledMaps(maps, smax, lays, timings)


def tiled_maps(
    det: Any,
    images: Sequence[object],
    *,
    chunk: int = 16,
    log: Callable[[str], None] | None = None,
) -> TiledMaps:
    """Stitched maps of ``images`` against a :func:`fit_tiled` detector's bank."""
    size = int(det.crop)
    maps: list[np.ndarray] = []
    lays: list[TileLayout] = []
    tf = tm = 0.0
    t = time.perf_counter()
    for f, lay in _features_of(det, list(images), size, chunk):
        t1 = time.perf_counter()
        tf += t1 - t
        tile_maps, _ = det.anomaly_maps(f)
        maps.extend(_stitch_all(tile_maps, lay))
        lays.extend(lay)
        t = time.perf_counter()
        tm += t - t1
        if log:
            log(f"tiled maps: {len(maps)}/{len(images)} images")
    smax = np.array([float(m.max()) for m in maps])
    return TiledMaps(maps, smax, lays, {"features": tf, "maps": tm})


def describe_maps(
    maps: Sequence[np.ndarray],
    components: Sequence[str] = ("std", "top_mean", "tv"),
    threshold: float = 0.0,
    threads: int | None = 1,
) -> np.ndarray:
    """phi of each (rectangular, variable-size) map with the product's Descriptor: (n, k)."""
    from ..descriptor import Descriptor

    d = Descriptor(components, threshold, threads=threads)
    return np.vstack([d(np.ascontiguousarray(m[None], dtype=np.float32)) for m in maps])


def variant_scores_from_phi(
    phi_cal: np.ndarray,
    max_cal: np.ndarray,
    phi_test: np.ndarray,
    max_test: np.ndarray,
    names: Sequence[str] = TILED_VARIANTS,
) -> dict[str, np.ndarray]:
    """The (max, phi) variants of :data:`TILED_VARIANTS` from precomputed descriptors.

    Same definitions as :mod:`structcore.research.variants` (``_paper``: the product's
    :class:`~structcore.calibration.StructCalibrator` on the paper's three components;
    ``fullcov``: ``max + lambda * `` full-covariance Mahalanobis), with the calibration
    descriptors those of the stitched same-train maps.
    """
    from ..calibration import CalibrationWarning, StructCalibrator
    from . import variants as sv

    comps = sv.PAPER
    mt = np.asarray(max_test, dtype=np.float64)
    mc = np.asarray(max_cal, dtype=np.float64)

    def paper(norm: str, lam: str | float, struct: bool) -> np.ndarray:
        cal = StructCalibrator(norm, lam, names=comps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalibrationWarning)
            cal.fit(phi_cal, mc)
        _, d, s = cal.transform(phi_test, mt)
        return np.asarray(d if struct else s, dtype=np.float64)

    table: dict[str, Callable[[], np.ndarray]] = {
        "max": lambda: mt,
        "paper/l2/auto/train": lambda: paper("l2", "auto", False),
        "paper/linf/auto/train": lambda: paper("linf", "auto", False),
        "paper/l2/0.05/train": lambda: paper("l2", 0.05, False),
        "struct/paper/l2/train": lambda: paper("l2", "auto", True),
        "fullcov/auto/train": lambda: sv.hybrid(
            mt, sv.mahalanobis(phi_cal, phi_test), mc, sv.mahalanobis(phi_cal, phi_cal), "auto"
        ),
    }
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown tiled variants {unknown}; known: {list(table)}")
    return {n: table[n]() for n in names}


def pixel_samples(
    maps: Sequence[np.ndarray], masks: Sequence[str | Path | None], step: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) of every ``step``-th pixel (both axes) of each stitched map.

    The full-resolution mask is resized (nearest, PIL) to the stitched map's extent; a
    missing mask (good image) is all zero.
    """
    from PIL import Image

    from ..datasets import read_mask

    ys, ss = [], []
    for m, p in zip(maps, masks, strict=True):
        h, w = m.shape
        if p is None:
            y = np.zeros((h, w), dtype=bool)
        else:
            mk = read_mask(p)
            im = Image.fromarray(mk.astype(np.uint8) * 255, mode="L")
            y = np.asarray(im.resize((w, h), resample=Image.Resampling.NEAREST)) > 127
        ys.append(y[::step, ::step].ravel())
        ss.append(m[::step, ::step].ravel())
    return np.concatenate(ys), np.concatenate(ss)
