"""Synthetic-defect makers and the learned score (issue 13): determinism, shapes, signs."""

from __future__ import annotations

import numpy as np
import pytest

from structcore.research import learned_score as ls
from structcore.research import synthetic_defects as sd


def _image(h: int = 90, w: int = 120, grey: bool = False) -> np.ndarray:
    rng = np.random.default_rng(1)
    img = rng.integers(60, 200, size=(h, w, 3), dtype=np.uint8)
    if grey:
        img[..., 1] = img[..., 0]
        img[..., 2] = img[..., 0]
    return img


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
    t, le, side = sd.crop_box(*img.shape[:2])
    outside = np.ones(img.shape[:2], dtype=bool)
    outside[t : t + side, le : le + side] = False
    assert not ma[outside].any()
    np.testing.assert_array_equal(a[outside], img[outside])  # pixels outside the crop kept
    if grey:
        assert np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])


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


def test_unknown_maker_and_bad_image_raise() -> None:
    with pytest.raises(ValueError, match="maker"):
        sd.make_defect(_image(), "nope")
    with pytest.raises(ValueError, match="uint8"):
        sd.make_defect(_image().astype(np.float32), "cutpaste")


def _toy(n: int = 200, sign: float = 1.0, seed: int = 0):
    """Good: max ~ N(0,1), phi ~ N(0,1); defect: max shifted +0.5, phi shifted by 2 * sign."""
    rng = np.random.default_rng(seed)
    mg, pg = rng.normal(size=n), rng.normal(size=(n, 2))
    md = rng.normal(size=n) + 0.5
    pd = rng.normal(size=(n, 2))
    pd[:, 0] += 2.0 * sign  # component 0 informative with this sign, component 1 noise
    return mg, pg, md, pd


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_fit_recovers_the_sign_of_an_informative_component(sign: float) -> None:
    mg, pg, md, pd = _toy(sign=sign)
    m = ls.fit_learned_score(mg, pg, md, pd, components=("c0", "c1"))
    assert not m.fallback and m.coef[0] > 0
    assert np.sign(m.a[0]) == sign
    assert abs(m.a[1]) < abs(m.a[0]) / 3
    assert set(m.cv) == set(ls.ALPHAS)
    # the score separates better than max alone on fresh data
    mg2, pg2, md2, pd2 = _toy(sign=sign, seed=1)
    y = np.r_[np.zeros(200), np.ones(200)]
    from structcore.research.ablation import auroc

    s = m.score(np.r_[mg2, md2], np.vstack([pg2, pd2]))
    assert auroc(y, s) > auroc(y, np.r_[mg2, md2]) + 0.05


def test_learned_score_is_monotone_in_max_and_linear_in_z() -> None:
    mg, pg, md, pd = _toy()
    m = ls.fit_learned_score(mg, pg, md, pd, components=("c0", "c1"), alphas=(1.0,))
    phi = np.random.default_rng(2).normal(size=(5, 2))
    base = m.score(np.zeros(5), phi)
    np.testing.assert_allclose(m.score(np.full(5, 0.7), phi) - base, 0.7)
    z = (phi - m.mu[1:]) / m.sigma[1:]
    np.testing.assert_allclose(base, z @ m.a)
    st = m.state()
    assert st["components"] == ["c0", "c1"] and len(st["a"]) == 2


def test_fallback_to_max_when_the_max_coefficient_is_not_positive() -> None:
    rng = np.random.default_rng(0)
    mg, pg = rng.normal(size=100) + 1.0, rng.normal(size=(100, 1))
    md, pd = rng.normal(size=100) - 1.0, rng.normal(size=(100, 1)) + 1.0  # max *drops*
    with pytest.warns(RuntimeWarning, match="falling back"):
        m = ls.fit_learned_score(mg, pg, md, pd, components=("c",), alphas=(0.1,))
    assert m.fallback and np.all(m.a == 0)
    np.testing.assert_array_equal(m.score(mg, pg), mg)


def test_fit_is_deterministic() -> None:
    mg, pg, md, pd = _toy()
    a = ls.fit_learned_score(mg, pg, md, pd, components=("c0", "c1"))
    b = ls.fit_learned_score(mg, pg, md, pd, components=("c0", "c1"))
    np.testing.assert_array_equal(a.a, b.a)
    assert a.alpha == b.alpha and a.cv == b.cv


def test_fit_logistic_matches_sklearn_unpenalised_intercept() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    z = rng.normal(size=(300, 3))
    y = (z @ np.array([1.0, -0.5, 0.0]) + rng.logistic(size=300) > 0).astype(int)
    coef, b0 = ls.fit_logistic(z, y, alpha=0.1, penalty=np.ones(3))
    # sklearn: C * sum loss + 1/2 ||w||^2  ==  mean loss + alpha/2 ||w||^2 with C = 1/(alpha n)
    sk = LogisticRegression(C=1.0 / (0.1 * 300), tol=1e-10, max_iter=10000).fit(z, y)
    np.testing.assert_allclose(coef, sk.coef_[0], atol=1e-4)
    np.testing.assert_allclose(b0, sk.intercept_[0], atol=1e-4)
