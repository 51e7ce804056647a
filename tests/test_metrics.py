"""Metrics against hand-computed values, scikit-learn and a brute-force PRO curve."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from structcore import metrics


def brute_pro_curve(masks: np.ndarray, maps: np.ndarray, max_fpr: float = 0.3) -> float:
    """AUPRO by definition: loop over every distinct threshold (slow, small inputs only)."""
    regions = []
    for i in range(masks.shape[0]):
        lab, n = ndimage.label(masks[i], structure=np.ones((3, 3)))
        regions += [(i, lab == r) for r in range(1, n + 1)]
    neg = ~masks
    fprs, pros = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        above = maps >= t
        fprs.append(float((above & neg).sum() / neg.sum()))
        pros.append(float(np.mean([above[i][r].mean() for i, r in regions])))
    # Integrate segment by segment, each clipped to [0, max_fpr] (linear within a segment).
    area = 0.0
    for i in range(len(fprs) - 1):
        x0, y0, x1, y1 = fprs[i], pros[i], fprs[i + 1], pros[i + 1]
        if x0 >= max_fpr:
            break
        if x1 > max_fpr:
            y1 = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
            x1 = max_fpr
        area += (x1 - x0) * (y0 + y1) / 2
    return area / max_fpr


# ----------------------------------------------------------------------------- image level


def test_image_auroc_hand_values() -> None:
    assert metrics.image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert metrics.image_auroc([0, 1], [0.0, 1.0]) == 1.0
    assert metrics.image_auroc([0, 1], [1.0, 0.0]) == 0.0
    assert metrics.image_auroc([0, 1], [0.5, 0.5]) == 0.5  # a tie counts one half


def test_image_auroc_single_class_is_none() -> None:
    assert metrics.image_auroc([0, 0, 0], [0.1, 0.2, 0.3]) is None
    assert metrics.image_auroc([1, 1], [0.1, 0.2]) is None


def test_f1_max_hand_values() -> None:
    assert metrics.f1_max([0, 1, 1, 0], [0.1, 0.9, 0.3, 0.4]) == pytest.approx(0.8)
    assert metrics.f1_max([0, 1], [0.0, 1.0]) == 1.0
    # Only positives: every threshold has precision 1; best recall 1.
    assert metrics.f1_max([1, 1], [0.3, 0.7]) == 1.0
    assert metrics.f1_max([0, 0], [0.3, 0.7]) is None


def test_image_validation() -> None:
    with pytest.raises(ValueError, match="labels has 2 entries"):
        metrics.image_auroc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="only 0 and 1"):
        metrics.image_auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        metrics.image_auroc([0, 1], [0.1, np.nan])
    with pytest.raises(TypeError, match="labels"):
        metrics.image_auroc([0.0, 1.0], [0.1, 0.2])


@given(st.integers(0, 2**31 - 1), st.integers(2, 60))
def test_image_auroc_matches_sklearn(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[0], y[1] = 0, 1
    s = np.round(rng.normal(size=n), 1)  # ties on purpose
    assert metrics.image_auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_image_metrics_by_name() -> None:
    out = metrics.image_metrics([0, 1, 0, 1], {"max": [0, 1, 0, 1], "bad": [1, 0, 1, 0]})
    assert out["image_auroc"] == {"max": 1.0, "bad": 0.0}
    assert out["f1_max"]["max"] == 1.0


# ----------------------------------------------------------------------------- pixel level


def test_pixel_auroc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(1)
    masks = rng.random((5, 12, 9)) > 0.8
    maps = np.round(rng.random((5, 12, 9)) + masks * 0.3, 2).astype(np.float32)
    got = metrics.pixel_auroc(masks, maps)
    assert got == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-9)


def test_aupro_perfect_and_inverted() -> None:
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[0, 1:3, 1:3] = True
    masks[1, 5:8, 0:6] = True
    assert metrics.aupro(masks, masks.astype(np.float32)) == pytest.approx(1.0)
    # Inverted: every defect pixel scores lowest, PRO stays 0 until FPR = 1.
    assert metrics.aupro(masks, (~masks).astype(np.float32)) == pytest.approx(0.0)


def test_aupro_hand_computed_two_regions() -> None:
    # One image 1x10; region A = pixels 0-1, region B = pixels 5-8 (two 8-connected regions).
    # Normal pixels: 2, 3, 4, 9 (4 of them).
    masks = np.zeros((1, 1, 10), dtype=bool)
    masks[0, 0, [0, 1, 5, 6, 7, 8]] = True
    maps = np.zeros((1, 1, 10), dtype=np.float32)
    maps[0, 0] = [0.9, 0.1, 0.8, 0.2, 0.05, 0.7, 0.7, 0.6, 0.0, 0.3]
    # Thresholds (descending) and the curve (FPR, PRO), PRO = mean(overlap A, overlap B):
    #  0.9 -> A 1/2, B 0     : (0,    0.25)
    #  0.8 -> + normal pixel : (0.25, 0.25)
    #  0.7 -> B 2/4          : (0.25, 0.5)
    #  0.6 -> B 3/4          : (0.25, 0.625)
    #  0.3 -> + normal       : (0.5,  0.625)  past 0.3: interpolate at 0.3 -> 0.625
    # Area on [0, 0.3]: (0,0)->(0,0.25) vertical (0); 0..0.25 at 0.25 -> 0.0625;
    # 0.25..0.3 at 0.625 -> 0.03125. Total 0.09375 / 0.3 = 0.3125.
    assert metrics.aupro(masks, maps) == pytest.approx(0.3125)
    assert metrics.aupro(masks, maps) == pytest.approx(brute_pro_curve(masks, maps), abs=1e-6)
    # max_fpr = 1: the full curve; ends (1, 1) through 0.2 -> (0.75, 0.625)...
    assert metrics.aupro(masks, maps, max_fpr=1.0) == pytest.approx(
        brute_pro_curve(masks, maps, 1.0), abs=1e-6
    )


def test_aupro_regions_weigh_equally_not_by_area() -> None:
    # A big region found, a small one missed: PRO is 1/2 at low FPR, not the pixel recall.
    masks = np.zeros((1, 20, 20), dtype=bool)
    masks[0, :10, :10] = True  # 100 pixels
    masks[0, 15, 15] = True  # 1 pixel
    maps = np.zeros((1, 20, 20), dtype=np.float32)
    maps[0, :10, :10] = 1.0
    # Curve (0, 0) -> (0, 1/2) -> (1, 1): PRO at FPR 0.3 is 0.65, area (0.5 + 0.65) / 2.
    # (Weighting by pixels instead would start at 100/101 and give about 0.99.)
    assert metrics.aupro(masks, maps) == pytest.approx(0.575)


def test_aupro_diagonal_pixels_are_one_region() -> None:
    masks = np.zeros((1, 6, 6), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True  # 8-connected: one region of 2 pixels
    masks[0, 4, 4:6] = True  # a second region
    maps = np.zeros((1, 6, 6), dtype=np.float32)
    maps[0, 0, 0] = 1.0
    maps[0, 4, 4:6] = 1.0
    # PRO at FPR 0 is (1/2 + 1) / 2 = 0.75 (4-connectivity would give 2/3), then linear to
    # (1, 1): PRO(0.3) = 0.825, area (0.75 + 0.825) / 2.
    assert metrics.aupro(masks, maps) == pytest.approx((0.75 + 0.825) / 2)


@given(st.integers(0, 2**31 - 1))
def test_aupro_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    masks = np.zeros((3, 10, 10), dtype=bool)
    for i in range(3):
        for _ in range(rng.integers(0, 3)):
            y, x = rng.integers(0, 8, 2)
            masks[i, y : y + rng.integers(1, 4), x : x + rng.integers(1, 4)] = True
    masks[0, 0, 0] = True
    maps = np.round(rng.random((3, 10, 10)) + 0.5 * masks, 1).astype(np.float32)
    got = metrics.aupro(masks, maps)
    assert got == pytest.approx(brute_pro_curve(masks, maps), abs=1e-5)


def test_pixel_f1_max_hand_value() -> None:
    masks = np.array([[[1, 1, 0, 0]]], dtype=bool)
    maps = np.array([[[0.9, 0.5, 0.6, 0.1]]], dtype=np.float32)
    # t=0.9: P1 R.5 F.667; t=0.6: P.5 R.5; t=0.5: P.667 R1 F.8
    assert metrics.pixel_metrics(masks, maps)["pixel_f1_max"] == pytest.approx(0.8)


def test_pixel_metrics_without_defects_are_none() -> None:
    out = metrics.pixel_metrics(np.zeros((2, 4, 4), bool), np.ones((2, 4, 4), np.float32))
    assert out == {"pixel_auroc": None, "aupro": None, "pixel_f1_max": None}


def test_pixel_validation() -> None:
    with pytest.raises(ValueError, match="does not match"):
        metrics.pixel_metrics(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 5), np.float32))
    with pytest.raises(ValueError, match="finite"):
        metrics.pixel_metrics(np.zeros((1, 2, 2), bool), np.full((1, 2, 2), np.inf))
    with pytest.raises(ValueError, match="max_fpr"):
        metrics.pixel_metrics(np.zeros((1, 2, 2), bool), np.zeros((1, 2, 2)), max_fpr=1.5)
    with pytest.raises(ValueError, match="0/1"):
        metrics.pixel_metrics(np.full((1, 2, 2), 2), np.zeros((1, 2, 2)))


def test_pixel_metrics_accept_one_2d_map() -> None:
    masks = np.array([[1, 0], [0, 0]], dtype=bool)
    maps = np.array([[0.9, 0.1], [0.2, 0.3]])
    assert metrics.pixel_auroc(masks, maps) == 1.0


def test_mean_metrics() -> None:
    per = {
        "a": {"image_auroc": {"max": 0.8, "structcore": 0.9}, "aupro": None},
        "b": {"image_auroc": {"max": 1.0, "structcore": 0.7}, "aupro": 0.5},
    }
    got = metrics.mean_metrics(per, ["image_auroc", "aupro", "missing"])
    assert got["image_auroc"] == pytest.approx({"max": 0.9, "structcore": 0.8})
    assert got["aupro"] == 0.5
    assert got["missing"] is None
