"""A procedurally generated industrial-texture data set with synthetic defects and exact masks.

The built-in demo set (``structcore demo``): no files to download, the same pixels for the same
seed on every machine (pure NumPy/SciPy, seeded ``numpy.random.Generator``).

Textures (:data:`CATEGORIES`)
    ``brushed_metal``: grey metal with fine streaks along a near-horizontal brushing direction
    and a soft lighting gradient; ``woven_fabric``: a plain weave of shaded warp and weft
    threads; ``ceramic_tiles``: a grid of speckled tiles with darker grout lines.
    Every image varies in phase, brightness, streak pattern, weave period and tile offset, so
    the normal class is not a single picture.

Defects (:data:`DEFECTS`)
    ``scratch``: a thin curved line, brighter or darker than the surface; ``spot``: a soft
    elliptical stain; ``crack``: a dark jagged line from a random walk with a branch.

Each defect is drawn as a coverage map ``c`` in [0, 1] (its anti-aliased footprint) and blended
into the clean texture with an opacity ``o`` in (0, 1] (how strong it is):
``image = clean + o * c * (colour - clean)``. The mask is exactly ``c >= 0.5``, the pixels the
footprint covers at least half; where ``c == 0`` the image equals the clean texture bit for
bit. Opacities and colours are chosen so that defects are visible but not all blatant (faint
stains, half-transparent scratches), so max pooling does not trivially reach AUROC 1.
Defects are placed at least ``MARGIN * size / 256`` pixels from the border (defect sizes scale
with ``size / 256`` too), so they lie inside the detector's default centre crop
(224 of 256 pixels, the same fraction at other sizes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ._validation import check_choice, check_int

__all__ = [
    "CATEGORIES",
    "DEFECTS",
    "MARGIN",
    "SyntheticSample",
    "clean_texture",
    "draw_defect",
    "render",
    "write_dataset",
]

#: Texture categories of the demo set.
CATEGORIES: tuple[str, ...] = ("brushed_metal", "woven_fabric", "ceramic_tiles")
#: Defect types.
DEFECTS: tuple[str, ...] = ("scratch", "spot", "crack")
#: Minimum distance (pixels) of a defect's centre line or blob from the image border.
MARGIN = 40


def _margin(size: int) -> float:
    return MARGIN * size / 256.0


_SPLITS = {"train": 0, "test": 1}


@dataclass(frozen=True)
class SyntheticSample:
    """One rendered image.

    Attributes
    ----------
    image : ndarray of shape (size, size, 3), uint8
        The picture.
    mask : ndarray of shape (size, size), bool
        Defect pixels (all False for a normal image).
    clean : ndarray of shape (size, size, 3), uint8
        The same texture without the defect.
    defect : str
        ``"good"`` or one of :data:`DEFECTS`.
    """

    image: np.ndarray
    mask: np.ndarray
    clean: np.ndarray
    defect: str


# --------------------------------------------------------------------------- textures


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    return yy, xx


def _brushed_metal(size: int, rng: np.random.Generator) -> np.ndarray:
    angle = np.deg2rad(rng.uniform(-4.0, 4.0))
    noise = rng.normal(size=(size * 2, size * 2))
    # Long along x, short along y: streaks. Rotate slightly, then crop the middle.
    from scipy import ndimage  # lazily: `import structcore` stays scipy-free

    streaks = ndimage.gaussian_filter(noise, sigma=(0.8, rng.uniform(18.0, 30.0)), mode="wrap")
    streaks = ndimage.rotate(streaks, np.rad2deg(angle), reshape=False, order=1, mode="wrap")
    o = size // 2
    streaks = streaks[o : o + size, o : o + size]
    streaks /= streaks.std() + 1e-12
    fine = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma=(0.5, 3.0))
    fine /= fine.std() + 1e-12
    yy, xx = _grid(size)
    gx, gy = rng.uniform(-1, 1, 2)
    light = (gx * (xx / size - 0.5) + gy * (yy / size - 0.5)) * 0.08
    base = rng.uniform(0.52, 0.62)
    gray = base + 0.045 * streaks + 0.015 * fine + light
    tint = np.array([0.97, 1.0, 1.04])
    return gray[:, :, None] * tint[None, None, :]


def _woven_fabric(size: int, rng: np.random.Generator) -> np.ndarray:
    period = rng.uniform(7.5, 9.5)
    px, py = rng.uniform(0, period, 2)
    yy, xx = _grid(size)
    u, v = (xx + px) / period, (yy + py) / period
    over = (np.floor(u) + np.floor(v)) % 2 == 0
    # A thread's cross-section: bright in the middle, dark at the edges.
    warp = np.sin(np.pi * (u % 1.0)) ** 0.8
    weft = np.sin(np.pi * (v % 1.0)) ** 0.8
    shade = np.where(over, warp, weft)
    from scipy import ndimage  # lazily: `import structcore` stays scipy-free

    fibre = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma=0.7)
    fibre /= fibre.std() + 1e-12
    base = rng.uniform(0.45, 0.55)
    lum = base * (0.72 + 0.32 * shade) + 0.02 * fibre
    colour = np.array([0.92, 0.82, 0.62]) * rng.uniform(0.95, 1.05, 3)
    return lum[:, :, None] * colour[None, None, :] * 1.25


def _ceramic_tiles(size: int, rng: np.random.Generator) -> np.ndarray:
    tile = rng.uniform(56.0, 68.0)
    grout = rng.uniform(3.0, 4.5)
    ox, oy = rng.uniform(0, tile, 2)
    yy, xx = _grid(size)
    u, v = (xx + ox) % tile, (yy + oy) % tile
    iu, iv = np.floor((xx + ox) / tile).astype(int), np.floor((yy + oy) / tile).astype(int)
    dist_edge = np.minimum(np.minimum(u, tile - u), np.minimum(v, tile - v))
    # Soft grout edge (anti-aliased over one pixel).
    in_tile = np.clip(dist_edge - grout / 2 + 0.5, 0.0, 1.0)
    albedo_grid = rng.uniform(0.68, 0.76, size=(size // 40 + 4, size // 40 + 4))
    albedo = albedo_grid[iv % albedo_grid.shape[0], iu % albedo_grid.shape[1]]
    from scipy import ndimage  # lazily: `import structcore` stays scipy-free

    speckle = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma=1.0)
    speckle /= speckle.std() + 1e-12
    surface = albedo + 0.025 * speckle
    grout_lum = 0.32 + 0.02 * speckle
    lum = in_tile * surface + (1 - in_tile) * grout_lum
    colour = np.array([0.98, 0.97, 0.93])
    return lum[:, :, None] * colour[None, None, :]


_TEXTURES = {
    "brushed_metal": _brushed_metal,
    "woven_fabric": _woven_fabric,
    "ceramic_tiles": _ceramic_tiles,
}


def clean_texture(category: str, size: int = 256, *, seed: int | Sequence[int] = 0) -> np.ndarray:
    """Render a defect-free texture.

    Parameters
    ----------
    category : str
        One of :data:`CATEGORIES`.
    size : int
        Side in pixels (at least 64).
    seed : int or sequence of int
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    ndarray of shape (size, size, 3), float64, values in [0, 1]
    """
    check_choice(category, "category", CATEGORIES)
    size = check_int(size, "size", low=64, high=4096)
    rgb = _TEXTURES[category](size, np.random.default_rng(seed))
    return np.clip(rgb, 0.0, 1.0)


# --------------------------------------------------------------------------- defects


def _polyline_coverage(points: np.ndarray, width: np.ndarray | float, size: int) -> np.ndarray:
    """Anti-aliased coverage of a polyline of the given width (pixels), shape (size, size)."""
    yy, xx = _grid(size)
    widths = np.broadcast_to(np.asarray(width, dtype=np.float64), (points.shape[0],))
    cov = np.zeros((size, size))
    pad = float(widths.max()) + 2.0
    for i in range(points.shape[0] - 1):
        (y0, x0), (y1, x1) = points[i], points[i + 1]
        ys = slice(max(int(min(y0, y1) - pad), 0), min(int(max(y0, y1) + pad) + 1, size))
        xs = slice(max(int(min(x0, x1) - pad), 0), min(int(max(x0, x1) + pad) + 1, size))
        py, px = yy[ys, xs], xx[ys, xs]
        dy, dx = y1 - y0, x1 - x0
        seg2 = dy * dy + dx * dx
        t = np.clip(((py - y0) * dy + (px - x0) * dx) / seg2, 0.0, 1.0) if seg2 > 0 else 0.0
        d = np.hypot(py - (y0 + t * dy), px - (x0 + t * dx))
        w = widths[i] + (widths[i + 1] - widths[i]) * t
        c = np.clip(w / 2.0 - d + 0.5, 0.0, 1.0)
        cov[ys, xs] = np.maximum(cov[ys, xs], c)
    return cov


def _scratch(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    f, m = size / 256.0, _margin(size)
    length = rng.uniform(50.0, 110.0) * f
    angle = rng.uniform(0, np.pi)
    cy, cx = rng.uniform(m + 10 * f, size - m - 10 * f, 2)
    d = np.array([np.sin(angle), np.cos(angle)])
    n = np.array([-d[1], d[0]])
    p0 = np.array([cy, cx]) - d * length / 2
    p2 = np.array([cy, cx]) + d * length / 2
    p1 = np.array([cy, cx]) + n * rng.uniform(-0.25, 0.25) * length  # Bezier control point
    t = np.linspace(0.0, 1.0, 24)[:, None]
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    pts = np.clip(pts, m, size - 1 - m)
    width = rng.uniform(2.0, 3.5) * np.sin(np.pi * np.linspace(0.08, 0.92, pts.shape[0])) ** 0.3
    cov = _polyline_coverage(pts, width, size)
    grey = rng.choice([rng.uniform(0.8, 0.95), rng.uniform(0.15, 0.3)])
    return cov, np.full(3, grey), float(rng.uniform(0.3, 0.65))


def _spot(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    yy, xx = _grid(size)
    f, m = size / 256.0, _margin(size)
    cy, cx = rng.uniform(m + 8 * f, size - m - 8 * f, 2)
    ry, rx = rng.uniform(7.0, 20.0, 2) * max(f, 0.5)
    th = rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    a = (dy * np.cos(th) - dx * np.sin(th)) / ry
    b = (dy * np.sin(th) + dx * np.cos(th)) / rx
    r = np.sqrt(a * a + b * b)
    # Wobbly rim: a low-frequency angular perturbation of the radius.
    phi = np.arctan2(b, a)
    k = rng.integers(3, 6)
    rim = 1.0 + 0.15 * np.sin(k * phi + rng.uniform(0, 2 * np.pi))
    cov = np.clip((rim - r) * min(ry, rx) / 2.0 + 0.5, 0.0, 1.0)
    stains = (np.array([0.45, 0.3, 0.18]), np.array([0.2, 0.2, 0.2]), np.array([0.6, 0.6, 0.45]))
    colour = stains[int(rng.integers(0, len(stains)))] * rng.uniform(0.9, 1.1)
    return cov, colour, float(rng.uniform(0.2, 0.5))


def _crack(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    f, m = size / 256.0, _margin(size)

    def walk(start: np.ndarray, heading: float, steps: int) -> np.ndarray:
        pts = [start]
        for _ in range(steps):
            heading += rng.normal(0, 0.45)
            step = rng.uniform(3.0, 6.0) * f
            nxt = pts[-1] + step * np.array([np.sin(heading), np.cos(heading)])
            pts.append(np.clip(nxt, m, size - 1 - m))
        return np.array(pts)

    start = rng.uniform(m + 20 * f, size - m - 20 * f, 2)
    heading = rng.uniform(0, 2 * np.pi)
    main = walk(start, heading, int(rng.integers(12, 20)))
    cov = _polyline_coverage(main, rng.uniform(1.4, 2.4), size)
    j = int(rng.integers(3, main.shape[0] - 3))
    branch = walk(main[j], heading + rng.choice([-1, 1]) * rng.uniform(0.6, 1.2), 6)
    cov = np.maximum(cov, _polyline_coverage(branch, rng.uniform(1.0, 1.6), size))
    return cov, np.full(3, rng.uniform(0.05, 0.15)), float(rng.uniform(0.55, 0.9))


_DEFECTS = {"scratch": _scratch, "spot": _spot, "crack": _crack}


def draw_defect(
    clean: np.ndarray, defect: str, *, seed: int | Sequence[int] = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Blend a synthetic defect into a clean texture.

    Parameters
    ----------
    clean : ndarray of shape (size, size, 3), float, values in [0, 1]
    defect : str
        One of :data:`DEFECTS`.
    seed : int or sequence of int
        Seed of the defect's shape, place and colour.

    Returns
    -------
    image : ndarray of shape (size, size, 3), float64 in [0, 1]
        ``clean + opacity * coverage * (colour - clean)``.
    coverage : ndarray of shape (size, size), float64 in [0, 1]
        The defect's footprint; the ground-truth mask is ``coverage >= 0.5``.
    """
    check_choice(defect, "defect", DEFECTS)
    size = clean.shape[0]
    cov, colour, opacity = _DEFECTS[defect](size, np.random.default_rng(seed))
    w = (opacity * cov)[:, :, None]
    image = clean + w * (colour[None, None, :] - clean)
    return image, cov


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def render(
    category: str, defect: str = "good", *, seed: int | Sequence[int] = 0, size: int = 256
) -> SyntheticSample:
    """Render one image of the demo set.

    Parameters
    ----------
    category : str
        One of :data:`CATEGORIES`.
    defect : str
        ``"good"`` or one of :data:`DEFECTS`.
    seed : int or sequence of int
        Seed: the texture uses ``[*seed, 0]``, the defect ``[*seed, 1]``.
    size : int
        Side in pixels.

    Returns
    -------
    SyntheticSample
        ``image`` equals ``clean`` wherever the defect's coverage is 0, and ``mask`` is
        ``coverage >= 0.5`` (empty for ``"good"``).

    Examples
    --------
    >>> s = render("ceramic_tiles", "spot", seed=3)
    >>> s.image.shape, s.mask.dtype, bool(s.mask.any())
    ((256, 256, 3), dtype('bool'), True)
    """
    if defect != "good":
        check_choice(defect, "defect", DEFECTS)
    base = [int(s) for s in np.atleast_1d(seed)]
    clean = clean_texture(category, size, seed=[*base, 0])
    clean_u8 = _to_uint8(clean)
    if defect == "good":
        return SyntheticSample(clean_u8, np.zeros((size, size), dtype=bool), clean_u8, "good")
    image, alpha = draw_defect(clean, defect, seed=[*base, 1])
    image_u8 = np.where(alpha[:, :, None] > 0, _to_uint8(image), clean_u8)
    return SyntheticSample(image_u8, alpha >= 0.5, clean_u8, defect)


def write_dataset(
    root: str | Path,
    *,
    categories: Sequence[str] = CATEGORIES,
    n_train: int = 40,
    n_test_good: int = 12,
    n_test_defect: int = 4,
    size: int = 256,
    seed: int = 0,
) -> Path:
    """Write the demo set to disk in the MVTec AD layout.

    Parameters
    ----------
    root : str or Path
        Output folder; gets ``<category>/train/good``, ``<category>/test/<defect>`` and
        ``<category>/ground_truth/<defect>/<id>_mask.png`` (0/255 PNG).
    categories : sequence of str
        Subset of :data:`CATEGORIES`.
    n_train, n_test_good : int
        Normal training and test images per category.
    n_test_defect : int
        Test images per defect type and category (so ``3 * n_test_defect`` defective ones).
    size : int
        Image side in pixels.
    seed : int
        Master seed: image ``i`` of split ``s`` of category ``c`` uses
        ``[seed, c, s, defect_index, i]``, so subsets render identically.

    Returns
    -------
    Path
        ``root``; read it back with :func:`structcore.datasets.load_mvtec`.
    """
    root = Path(root)
    for c in categories:
        check_choice(c, "categories", CATEGORIES)
    n_train = check_int(n_train, "n_train", low=1)
    n_test_good = check_int(n_test_good, "n_test_good", low=0)
    n_test_defect = check_int(n_test_defect, "n_test_defect", low=0)
    seed = check_int(seed, "seed", low=0)
    for category in categories:
        ci = CATEGORIES.index(category)
        jobs: list[tuple[str, str, int, int]] = [("train", "good", 0, i) for i in range(n_train)]
        jobs += [("test", "good", 0, i) for i in range(n_test_good)]
        jobs += [
            ("test", d, di + 1, i) for di, d in enumerate(DEFECTS) for i in range(n_test_defect)
        ]
        for split, defect, di, i in jobs:
            sample = render(category, defect, seed=[seed, ci, _SPLITS[split], di, i], size=size)
            folder = root / category / split / defect
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(sample.image).save(folder / f"{i:03d}.png")
            if defect != "good":
                gt = root / category / "ground_truth" / defect
                gt.mkdir(parents=True, exist_ok=True)
                Image.fromarray(sample.mask.astype(np.uint8) * 255).save(gt / f"{i:03d}_mask.png")
    return root
