"""Synthetic-defect makers (structcore.defects): seeded, deterministic, bounded to the crop."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from structcore import defects as sd


def _image(h: int = 90, w: int = 120, grey: bool = False) -> np.ndarray:
    rng = np.random.default_rng(1)
    img = rng.integers(60, 200, size=(h, w, 3), dtype=np.uint8)
    if grey:
        img[..., 1] = img[..., 0]
        img[..., 2] = img[..., 0]
    return img


def _outside(shape: tuple[int, ...], resize: int = 256, crop: int = 224) -> np.ndarray:
    t, le, side = sd.crop_box(shape[0], shape[1], resize, crop)
    out = np.ones(shape[:2], dtype=bool)
    out[t : t + side, le : le + side] = False
    return out


@pytest.mark.parametrize("maker", sd.MAKERS)
@pytest.mark.parametrize("grey", [False, True])
def test_makers_are_seeded_deterministic_and_inside_the_crop(maker: str, grey: bool) -> None:
    img = _image(grey=grey)
    before = img.copy()
    a, ma = sd.make_defect(img, maker, seed=[0, 3, 1])
    b, mb = sd.make_defect(img, maker, seed=[0, 3, 1])
    c, _ = sd.make_defect(img, maker, seed=[0, 4, 1])
    np.testing.assert_array_equal(img, before)  # input untouched
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ma, mb)
    assert not np.array_equal(a, c)
    assert a.shape == img.shape and a.dtype == np.uint8
    assert ma.shape == img.shape[:2] and ma.dtype == bool and ma.any()
    outside = _outside(img.shape)
    assert not ma[outside].any()
    np.testing.assert_array_equal(a[outside], img[outside])  # pixels outside the crop kept
    if grey:
        assert np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])


@pytest.mark.parametrize("maker", ["cutpaste", "perlin"])
def test_cutpaste_and_perlin_change_only_a_small_region_around_the_mask(maker: str) -> None:
    img = _image(160, 160)
    for i in range(12):
        out, mask = sd.make_defect(img, maker, seed=[5, i, 0], resize=160, crop=160)
        changed = (out != img).any(axis=2)
        # every changed pixel is at most 2 px from the mask (bilinear edges of a rotated patch)
        assert not (changed & ~ndimage.binary_dilation(mask, iterations=2)).any()
        # bounded size: CutPaste <= 6% of the crop (rectangle) or a 25% x 6% scar; Perlin <= 8%
        assert mask.sum() <= 0.08 * 160 * 160


def test_float_images_give_float_defects_equal_to_the_uint8_ones_up_to_rounding() -> None:
    img = _image()
    x = img.astype(np.float32) / np.float32(255.0)
    for maker in sd.MAKERS:
        a, ma = sd.make_defect(img, maker, seed=7)
        f, mf = sd.make_defect(x, maker, seed=7)
        assert f.dtype == np.float32 and f.min() >= 0.0 and f.max() <= 1.0
        np.testing.assert_array_equal(ma, mf)
        np.testing.assert_allclose(f * 255.0, a, atol=0.5 + 1e-3)
        outside = _outside(img.shape)
        np.testing.assert_array_equal(f[outside], x[outside])  # bit for bit outside the crop


def test_defect_images_seeds_by_image_index_and_maker() -> None:
    img = _image()
    both = sd.defect_images(img, 3, seed=2, makers=("cutpaste", "perlin"))
    only = sd.defect_images(img, 3, seed=2, makers=("perlin",))
    assert len(both) == 2 and len(only) == 1
    np.testing.assert_array_equal(both[1], only[0])  # independent of the other makers
    np.testing.assert_array_equal(both[1], sd.make_defect(img, "perlin", seed=[2, 3, 1])[0])
    assert not np.array_equal(both[0], sd.defect_images(img, 4, seed=2, makers=("cutpaste",))[0])
    assert sd.SYNTHETIC_MAKERS == ("cutpaste", "perlin")


def test_small_images_get_perlin_textures_too() -> None:
    # the crop spans 40 px (< 64, clean_texture's minimum): the foreign texture is cut from 64
    img = _image(40, 40)
    for i in range(8):
        out, mask = sd.make_defect(img, "perlin", seed=i, resize=40, crop=40)
        assert out.shape == img.shape and mask.any()


def test_crop_box_matches_the_detector_preprocessing() -> None:
    # 512 x 512, resize 256 crop 224: the crop is the centre 448 px
    assert sd.crop_box(512, 512) == (32, 32, 448)
    t, le, side = sd.crop_box(300, 600)  # wide: shorter side 300 -> 256, crop 224 -> 262.5 px
    assert t == 19 and side == 262 and le == (600 - 262) // 2 + 0


def test_perlin_noise_is_seeded_and_smooth() -> None:
    a = sd.perlin_noise(64, 64, (4, 4), np.random.default_rng(0))
    b = sd.perlin_noise(64, 64, (4, 4), np.random.default_rng(0))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (64, 64) and np.abs(a).max() <= 1.0
    assert np.abs(np.diff(a, axis=1)).max() < 0.2


def test_bad_arguments_raise_naming_them() -> None:
    img = _image()
    with pytest.raises(ValueError, match="maker"):
        sd.make_defect(img, "nope")
    with pytest.raises(ValueError, match="image must have shape"):
        sd.make_defect(img[..., 0], "cutpaste")
    with pytest.raises(TypeError, match="image must be uint8 or float"):
        sd.make_defect(img.astype(np.int16), "cutpaste")
    with pytest.raises(ValueError, match=r"image: float images must .* \[0, 1\]"):
        sd.make_defect(img.astype(np.float32), "cutpaste")
    with pytest.raises(ValueError, match="image: the centre crop spans"):
        sd.make_defect(_image(6, 6), "cutpaste", resize=6, crop=6)
    with pytest.raises(ValueError, match="crop"):
        sd.make_defect(img, "cutpaste", crop=0)
    with pytest.raises(ValueError, match="makers"):
        sd.defect_images(img, 0, makers=("cutpaste", "nope"))
    with pytest.raises(ValueError, match="index"):
        sd.defect_images(img, -1)
