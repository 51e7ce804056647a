"""Tiled inference (structcore.research.tiling): tile geometry, stitching, scores from phi."""

from __future__ import annotations

import math

import numpy as np
import pytest

from structcore.datasets import crop_geometry
from structcore.research import ablation as ab
from structcore.research import tiling as tl
from structcore.research import variants as sv


@pytest.mark.parametrize("size", [1, 7, 32, 224])
def test_tiles_cover_the_long_side_exactly(size: int) -> None:
    for length in range(size, 4 * size + 3):
        off = tl.tile_offsets(length, size)
        assert off.size == math.ceil(length / size)
        assert off[0] == 0 and off[-1] == length - size
        assert np.all(np.diff(off) >= 0) and np.all(np.diff(off) <= size)  # no gap
        covered = np.zeros(length, dtype=int)
        for o in off:
            covered[o : o + size] += 1
        assert covered.min() >= 1


def test_tile_offsets_refuses_short_lengths() -> None:
    with pytest.raises(ValueError):
        tl.tile_offsets(5, 6)


@pytest.mark.parametrize("hw", [(100, 100), (103, 265), (632, 222), (321, 400), (10, 30)])
def test_resized_shape_is_torchvisions(hw: tuple[int, int]) -> None:
    h, w = hw
    nh, nw, _, _ = crop_geometry(h, w, 56, 56)
    assert tl.resized_shape(h, w, 56) == (nh, nw)


@pytest.mark.parametrize("hw", [(56, 150), (150, 56), (56, 56), (56, 112), (56, 113)])
def test_stitching_constant_tiles_gives_the_constant(hw: tuple[int, int]) -> None:
    lay = tl.layout_for(*hw, 56)
    out = tl.stitch(np.full((lay.n_tiles, 56, 56), 2.5, dtype=np.float32), lay)
    assert out.shape == hw
    assert np.all(out == np.float32(2.5))


def test_stitching_averages_overlaps() -> None:
    # width 150, tiles of 56: offsets 0, 47, 94 (overlaps 47..55 and 94..102)
    lay = tl.layout_for(56, 150, 56)
    assert lay.offsets == (0, 47, 94) and lay.axis == 1
    tiles = np.stack([np.full((56, 56), v, dtype=np.float32) for v in (1.0, 3.0, 8.0)])
    out = tl.stitch(tiles, lay)
    assert np.all(out[:, :47] == 1.0)
    assert np.all(out[:, 47:56] == 2.0)
    assert np.all(out[:, 56:94] == 3.0)
    assert np.all(out[:, 94:103] == 5.5)
    assert np.all(out[:, 103:] == 8.0)
    # vertical layout, and a ramp survives stitching where tiles agree
    lay_v = tl.layout_for(150, 56, 56)
    ramp = np.arange(150, dtype=np.float32)[:, None].repeat(56, axis=1)
    tiles_v = np.stack([ramp[lay_v.box(i)] for i in range(lay_v.n_tiles)])
    np.testing.assert_allclose(tl.stitch(tiles_v, lay_v), ramp)
    with pytest.raises(ValueError):
        tl.stitch(tiles[:2], lay)


def test_cut_tiles_are_slices_of_the_resized_image() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((40, 100, 3)).astype(np.float32)  # 40 x 100 -> 32 x 80 at size 32
    tiles, lay = tl.cut_tiles(img, 32)
    assert (lay.height, lay.width, lay.n_tiles) == (32, 80, 3)
    full = tl._resized_tensor(img, 32).numpy()
    for i in range(lay.n_tiles):
        r, c = lay.box(i)
        np.testing.assert_array_equal(tiles[i].numpy(), full[:, r, c])
    # stitching the tiles back (each channel) gives the resized image
    back = tl.stitch(tiles[:, 0].numpy(), lay)
    np.testing.assert_allclose(back, full[0], rtol=0, atol=1e-6)


def test_scores_from_phi_equal_the_variants_on_square_maps() -> None:
    rng = np.random.default_rng(3)
    cal = rng.gamma(2.0, 1.0, size=(20, 24, 24)).astype(np.float32)
    test = rng.gamma(2.0, 1.0, size=(15, 24, 24)).astype(np.float32)
    test[:5, 5:9, 5:9] += 4.0
    cmax = cal.reshape(20, -1).max(1).astype(np.float64)
    tmax = test.reshape(15, -1).max(1).astype(np.float64)
    ms = ab.MapSet(
        test_maps=test,
        test_max=tmax,
        labels=np.r_[np.ones(5), np.zeros(10)].astype(np.int64),
        defects=np.array(["d"] * 5 + ["good"] * 10),
        cal_maps={"train": cal, "crossfit": cal},
        cal_max={"train": cmax, "crossfit": cmax},
        folds=np.arange(20) % 5,
    )
    ref = sv.score_variants(ms, names=list(tl.TILED_VARIANTS), threads=1)
    got = tl.variant_scores_from_phi(
        tl.describe_maps(list(cal)), cmax, tl.describe_maps(list(test)), tmax
    )
    assert set(got) == set(ref)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-12, atol=1e-12)


def test_descriptor_takes_rectangular_maps() -> None:
    # the stitched maps are 224 x L: the product's C++ describe must treat them as H x W
    rng = np.random.default_rng(5)
    m = rng.random((30, 70)).astype(np.float32)
    got = tl.describe_maps([m], threads=1)[0]
    x = m.astype(np.float64)
    k = max(1, round(0.01 * x.size))
    tv = (np.abs(np.diff(x, axis=1)).sum() + np.abs(np.diff(x, axis=0)).sum()) / x.size
    want = [x.std(), np.sort(x.ravel())[-k:].mean(), tv]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(tl.describe_maps([m.T], threads=1)[0], want, rtol=1e-5)
