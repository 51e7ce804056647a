"""Synthetic defects on train-good images: the label-free half of ``calibration="synthetic"``.

The train-good images are all a user has; this module makes defective versions of them, seeded
and deterministic, so that the image score can be fitted on cross-fitted good maps versus maps
of synthetic defects (:mod:`structcore.learned_calibration`), without any real defect label.
Three makers (:data:`MAKERS`):

* ``"cutpaste"``: CutPaste (Li et al., CVPR 2021): a patch of the same image, with colour
  jitter (brightness, contrast), pasted elsewhere; half of the draws are the "scar" variant
  (a thin, long, rotated patch);
* ``"perlin"``: a DRAEM-like blend (Zavrtanik et al., ICCV 2021): a thresholded Perlin-noise
  mask through which a foreign texture (a :func:`structcore.synthetic.clean_texture` of a
  random category, or the image itself flipped and brightness-shifted) is blended in;
* ``"painter"``: the project's own defect painter :func:`structcore.synthetic.draw_defect`
  (scratch, spot, crack) on the centre-crop square.

:data:`SYNTHETIC_MAKERS` (CutPaste and Perlin, the ``cp+perlin`` recipe of docs/ABLATION.md) is
what :class:`structcore.Detector` uses; the painter is left out because it draws the test
defects of the project's synthetic textures.

Defects are placed inside the detector's centre crop (:func:`crop_box`: the ``resize`` /
``crop`` preprocessing mapped back to the original pixels), and their sizes are relative to
it, so they survive the preprocessing at any image size: pixels outside the crop are never
changed. Grey images (three equal channels) get grey defects. Every function takes a seed and
returns the same pixels for the same seed (pure NumPy/SciPy).

Images are ``(H, W, 3)`` RGB, either uint8 (the defect image is rounded to uint8 too) or
float in ``[0, 1]`` (the defect image is float32 in ``[0, 1]``); the makers work in 0-255
units internally.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ._validation import check_int
from .datasets import crop_geometry
from .synthetic import CATEGORIES, DEFECTS, clean_texture, draw_defect

__all__ = [
    "MAKERS",
    "MIN_CROP_SIDE",
    "SYNTHETIC_MAKERS",
    "crop_box",
    "cutpaste",
    "defect_images",
    "make_defect",
    "painter",
    "perlin_blend",
    "perlin_noise",
]

#: Defect makers, in the order of their seed index (``seed = [seed, image, MAKERS.index]``).
MAKERS: tuple[str, ...] = ("cutpaste", "perlin", "painter")
#: The makers of ``Detector(calibration="synthetic")``: one defect of each per train image.
SYNTHETIC_MAKERS: tuple[str, ...] = ("cutpaste", "perlin")
#: Smallest side (pixels of the original image) of the centre-crop square a defect goes in.
MIN_CROP_SIDE = 8
#: Side at which the foreign textures of the Perlin blend are rendered at least (then cut).
_TEXTURE_MIN = 64


def crop_box(height: int, width: int, resize: int = 256, crop: int = 224) -> tuple[int, int, int]:
    """The detector's centre crop in original pixels: ``(top, left, side)`` of a square.

    ``Resize(resize)`` + ``CenterCrop(crop)`` (:func:`structcore.datasets.crop_geometry`)
    mapped back to the original image and clipped to it.

    Parameters
    ----------
    height, width : int
        Size of the original image, pixels.
    resize, crop : int
        The detector's preprocessing.

    Returns
    -------
    (top, left, side) : tuple of int
        Pixels of the original image; ``side >= 2``.
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


def perlin_noise(
    height: int, width: int, res: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """2-D Perlin gradient noise (Perlin 2002's quintic fade).

    Parameters
    ----------
    height, width : int
        Output size, pixels.
    res : (int, int)
        Number of noise periods along y and x (values below 1 count as 1).
    rng : numpy.random.Generator
        Draws the lattice gradients.

    Returns
    -------
    noise : ndarray of shape (height, width), float64
        Values in [-1, 1], smooth (one period spans ``height / res[0]`` pixels).
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
    img: np.ndarray, rng: np.random.Generator, box: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """CutPaste (rectangle or scar) inside ``box``.

    Parameters
    ----------
    img : ndarray of shape (H, W, 3), float64
        RGB in 0-255 units (not modified).
    rng : numpy.random.Generator
    box : (top, left, side)
        The square the patch is cut from and pasted into (:func:`crop_box`).

    Returns
    -------
    image : ndarray of shape (H, W, 3), float64
        0-255 units, unclipped; equal to ``img`` outside the pasted patch.
    mask : ndarray of shape (H, W), bool
        Pixels the pasted patch covers at least half.
    """
    t, le, side = box
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
        from scipy import ndimage  # lazily: `import structcore` stays scipy-free

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
    mask = np.zeros(img.shape[:2], dtype=bool)
    mask[dy : dy + ph, dx : dx + pw] = pmask >= 0.5
    return out, mask


def perlin_blend(
    img: np.ndarray, rng: np.random.Generator, box: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """A foreign texture blended through a Perlin mask (1-8% of the crop) inside ``box``.

    Parameters and returns as :func:`cutpaste`; the mask is the thresholded Perlin noise
    (at most its 3 largest connected components).
    """
    t, le, side = box
    s = 2 ** int(rng.integers(1, 5))  # 2..16 periods across the crop
    noise = perlin_noise(side, side, (s, s), rng)
    frac = rng.uniform(0.01, 0.08)
    m = noise > np.quantile(noise, 1.0 - frac)
    # keep the largest blob and a few neighbours: at most 3 connected components
    from scipy import ndimage  # lazily: `import structcore` stays scipy-free

    lab, n = ndimage.label(m)
    if n > 3:
        sizes = ndimage.sum(m, lab, index=np.arange(1, n + 1))
        keep = 1 + np.argsort(sizes)[::-1][:3]
        m = np.isin(lab, keep)
    if rng.random() < 0.5:
        cat = CATEGORIES[int(rng.integers(0, len(CATEGORIES)))]
        seed = [int(v) for v in rng.integers(0, 2**31, size=2)]
        # rendered at >= 64 px (clean_texture's minimum) and cut: identical at side >= 64
        src = clean_texture(cat, max(side, _TEXTURE_MIN), seed=seed)[:side, :side] * 255.0
    else:
        src = img[t : t + side, le : le + side][::-1, ::-1] + rng.uniform(-0.2, 0.2) * 255.0
    if _is_grey(img):
        src = np.repeat(src.mean(axis=2, keepdims=True), 3, axis=2)
    a = (rng.uniform(0.3, 1.0) * m)[:, :, None]
    out = img.copy()
    region = out[t : t + side, le : le + side]
    out[t : t + side, le : le + side] = region * (1 - a) + src * a
    mask = np.zeros(img.shape[:2], dtype=bool)
    mask[t : t + side, le : le + side] = m
    return out, mask


def painter(
    img: np.ndarray, rng: np.random.Generator, box: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The project's painter (:func:`structcore.synthetic.draw_defect`) on the crop square.

    Parameters and returns as :func:`cutpaste`; the mask is the painter's coverage >= 0.5.
    """
    t, le, side = box
    region = img[t : t + side, le : le + side] / 255.0
    defect = DEFECTS[int(rng.integers(0, len(DEFECTS)))]
    drawn, cov = draw_defect(region, defect, seed=[int(v) for v in rng.integers(0, 2**31, size=2)])
    out = img.copy()
    out[t : t + side, le : le + side] = drawn * 255.0
    mask = np.zeros(img.shape[:2], dtype=bool)
    mask[t : t + side, le : le + side] = cov >= 0.5
    return out, mask


#: Maker functions: ``(image (H, W, 3) float64 in 0-255 units, rng, box) -> (image, mask)``.
_MAKERS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "cutpaste": cutpaste,
    "perlin": perlin_blend,
    "painter": painter,
}


def _check_image(image: object) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must have shape (H, W, 3); got {img.shape}")
    if img.dtype != np.uint8 and img.dtype.kind != "f":
        raise TypeError(f"image must be uint8 or float in [0, 1]; got dtype {img.dtype}")
    if img.dtype.kind == "f" and not (
        np.isfinite(img).all() and img.min() >= 0.0 and img.max() <= 1.0
    ):
        raise ValueError("image: float images must be finite and lie in [0, 1]")
    return img


def make_defect(
    image: object,
    maker: str,
    *,
    seed: int | Sequence[int] = 0,
    resize: int = 256,
    crop: int = 224,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic defect on ``image``.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8 or float in [0, 1]
        RGB (grey images: three equal channels). Not modified.
    maker : str
        One of :data:`MAKERS`.
    seed : int or sequence of int
        Seed of ``numpy.random.default_rng``: the same seed gives the same pixels.
    resize, crop : int
        The detector's preprocessing (the defect lies inside its centre crop, whose side in
        original pixels must be at least :data:`MIN_CROP_SIDE`).

    Returns
    -------
    image : ndarray of shape (H, W, 3), uint8 (uint8 input) or float32 in [0, 1]
        Equal to the input outside the centre crop (and, for CutPaste, outside the patch).
    mask : ndarray of shape (H, W), bool
        Pixels the defect covers (inside the centre crop).

    Raises
    ------
    ValueError
        Unknown ``maker``; ``image`` of another shape, with float values outside [0, 1], or
        too small; bad ``resize`` / ``crop``.
    TypeError
        ``image`` of another dtype.
    """
    if not isinstance(maker, str) or maker not in _MAKERS:
        raise ValueError(f"maker must be one of {MAKERS}; got {maker!r}")
    img = _check_image(image)
    resize = check_int(resize, "resize", low=1)
    crop = check_int(crop, "crop", low=1)
    box = crop_box(img.shape[0], img.shape[1], resize, crop)
    if box[2] < MIN_CROP_SIDE:
        raise ValueError(
            f"image: the centre crop spans {box[2]} px of this {img.shape[0]} x {img.shape[1]} "
            f"image; synthetic defects need at least {MIN_CROP_SIDE}"
        )
    work = img.astype(np.float64) if img.dtype == np.uint8 else img.astype(np.float64) * 255.0
    out, mask = _MAKERS[maker](work, np.random.default_rng(seed), box)
    if _is_grey(img):
        out = np.repeat(out.mean(axis=2, keepdims=True), 3, axis=2)
    out = np.clip(out, 0.0, 255.0)
    if img.dtype == np.uint8:
        return np.rint(out).astype(np.uint8), mask
    return (out / 255.0).astype(np.float32), mask


def defect_images(
    image: object,
    index: int,
    *,
    seed: int = 0,
    makers: Sequence[str] = SYNTHETIC_MAKERS,
    resize: int = 256,
    crop: int = 224,
) -> list[np.ndarray]:
    """The synthetic defects made on train image number ``index``: one per maker.

    Maker ``m`` uses the seed ``[seed, index, MAKERS.index(m)]``, so a defect depends only on
    the image, its position in the train set, the seed and the maker (not on the other makers
    asked for).

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8 or float in [0, 1]
    index : int >= 0
        Position of the image in the train set.
    seed : int >= 0
    makers : sequence of str
        Names of :data:`MAKERS`, in output order.
    resize, crop : int
        The detector's preprocessing.

    Returns
    -------
    images : list of ndarray (H, W, 3)
        One defect image per maker (dtype as :func:`make_defect`).
    """
    index = check_int(index, "index", low=0)
    seed = check_int(seed, "seed", low=0, high=2**63 - 1)
    return [
        make_defect(image, mk, seed=[seed, index, _maker_index(mk)], resize=resize, crop=crop)[0]
        for mk in makers
    ]


def _maker_index(maker: object) -> int:
    if not isinstance(maker, str) or maker not in _MAKERS:
        raise ValueError(f"makers must be names of {MAKERS}; got {maker!r}")
    return MAKERS.index(maker)
