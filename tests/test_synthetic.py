"""The synthetic demo set: determinism, exact masks, the MVTec layout on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from structcore import datasets, synthetic


@pytest.mark.parametrize("category", synthetic.CATEGORIES)
def test_render_is_deterministic_and_seed_dependent(category: str) -> None:
    a = synthetic.render(category, "crack", seed=[5, 1])
    b = synthetic.render(category, "crack", seed=[5, 1])
    c = synthetic.render(category, "crack", seed=[5, 2])
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.image, c.image)
    assert a.image.dtype == np.uint8 and a.image.shape == (256, 256, 3)


@pytest.mark.parametrize("category", synthetic.CATEGORIES)
@pytest.mark.parametrize("defect", synthetic.DEFECTS)
def test_mask_is_exactly_the_half_covered_pixels(category: str, defect: str) -> None:
    s = synthetic.render(category, defect, seed=7)
    clean = synthetic.clean_texture(category, seed=[7, 0])
    _, alpha = synthetic.draw_defect(clean, defect, seed=[7, 1])
    assert np.array_equal(s.mask, alpha >= 0.5)
    assert 20 < s.mask.sum() < 0.1 * s.mask.size
    # Untouched wherever the coverage is zero; changed on most mask pixels.
    untouched = alpha == 0
    assert np.array_equal(s.image[untouched], s.clean[untouched])
    diff = np.abs(s.image.astype(int) - s.clean.astype(int)).max(axis=2)
    assert (diff[s.mask] > 10).mean() > 0.8
    # Inside the 224-pixel centre crop of the 256-pixel image.
    ys, xs = np.nonzero(alpha > 0)
    assert ys.min() >= 16 and xs.min() >= 16 and ys.max() < 240 and xs.max() < 240


@pytest.mark.parametrize("size", [64, 112, 300])
def test_defects_scale_with_the_image_size(size: int) -> None:
    for defect in synthetic.DEFECTS:
        s = synthetic.render("brushed_metal", defect, seed=11, size=size)
        assert s.image.shape == (size, size, 3) and s.mask.any()
        ys, xs = np.nonzero(s.mask)
        border = size * 16 / 256  # outside the 224/256 centre crop
        assert ys.min() >= border and xs.min() >= border
        assert ys.max() < size - border and xs.max() < size - border


def test_good_images_have_empty_masks_and_vary() -> None:
    a = synthetic.render("woven_fabric", "good", seed=1)
    b = synthetic.render("woven_fabric", "good", seed=2)
    assert not a.mask.any() and np.array_equal(a.image, a.clean)
    assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() > 1.0


def test_render_validation() -> None:
    with pytest.raises(ValueError, match="category"):
        synthetic.render("marble", "good")
    with pytest.raises(ValueError, match="defect"):
        synthetic.render("brushed_metal", "dent")
    with pytest.raises(ValueError, match="size"):
        synthetic.clean_texture("brushed_metal", 32)


def test_write_dataset_reads_back_as_mvtec(tmp_path: Path) -> None:
    root = synthetic.write_dataset(
        tmp_path, categories=["ceramic_tiles"], n_train=3, n_test_good=2, n_test_defect=1, seed=4
    )
    ds = datasets.load_mvtec(root, "ceramic_tiles")
    assert ds.counts() == {
        "train": 3,
        "test": 5,
        "test_good": 2,
        "test_defective": 3,
        "test_defective_with_mask": 3,
    }
    crack = next(s for s in ds.test if s.defect == "crack")
    want = synthetic.render("ceramic_tiles", "crack", seed=[4, 2, 1, 3, 0])
    assert np.array_equal(datasets.read_image(crack.image), want.image)
    assert np.array_equal(datasets.read_mask(crack.mask), want.mask)
    # A subset renders the same pixels as the full set.
    other = synthetic.write_dataset(
        tmp_path / "b",
        categories=["ceramic_tiles"],
        n_train=1,
        n_test_good=0,
        n_test_defect=1,
        seed=4,
    )
    a = datasets.read_image(other / "ceramic_tiles" / "train" / "good" / "000.png")
    assert np.array_equal(a, datasets.read_image(ds.train[0]))
