"""Score variants (structcore.research.variants): shapes, invariances, degenerate input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from structcore.calibration import StructCalibrator
from structcore.research import variants as sc
from structcore.research.ablation import MapSet


def _phi(seed: int, n: int = 40, f: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, f)) * [1.0, 3.0, 0.2] + [5.0, -2.0, 1.0]


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    a=st.floats(0.01, 100.0),
    b=st.floats(-100.0, 100.0),
    robust=st.booleans(),
)
def test_z_affine_invariant(seed: int, a: float, b: float, robust: bool) -> None:
    cal, test = _phi(seed), _phi(seed + 1, n=7)
    z1 = sc.zscores(test, *sc.center_scale(cal, robust=robust))
    z2 = sc.zscores(a * test + b, *sc.center_scale(a * cal + b, robust=robust))
    np.testing.assert_allclose(z1, z2, rtol=1e-6, atol=1e-6)


def test_center_scale_matches_struct_calibrator() -> None:
    cal = _phi(0)
    c, s = sc.center_scale(cal)
    ref = StructCalibrator().fit(cal, np.zeros(cal.shape[0]))
    np.testing.assert_allclose(c, ref.mu_)
    np.testing.assert_allclose(s, ref.sigma_)


def test_robust_center_scale_resists_outlier() -> None:
    cal = _phi(1, n=101)
    c0, s0 = sc.center_scale(cal, robust=True)
    bad = cal.copy()
    bad[0] = 1e9
    c1, s1 = sc.center_scale(bad, robust=True)
    assert np.all(np.abs(c1 - c0) < 0.2 * s0)
    assert np.all(s1 < 1.5 * s0)


def test_one_sided_ignores_the_normal_direction() -> None:
    z = np.array([[-5.0, -1.0, 0.0], [3.0, -4.0, 0.0], [3.0, 0.0, 0.0]])
    d = sc.distance(z, "l2", one_sided=True)
    np.testing.assert_allclose(d, [0.0, 3.0, 3.0])
    np.testing.assert_allclose(sc.distance(z, "l2"), [np.sqrt(26.0), 5.0, 3.0])
    np.testing.assert_allclose(sc.distance(z, "linf", one_sided=True), [0.0, 3.0, 3.0])
    np.testing.assert_allclose(sc.distance(z, "linf"), [5.0, 4.0, 3.0])
    w = np.array([0.5, 1.0, 1.0])
    np.testing.assert_allclose(sc.distance(z, "l2", one_sided=True, weights=w), [0.0, 1.5, 1.5])
    with pytest.raises(ValueError, match="norm"):
        sc.distance(z, "l1")


def test_one_sided_is_monotone_in_each_component() -> None:
    rng = np.random.default_rng(3)
    z = rng.normal(size=(50, 4))
    up = z.copy()
    up[:, 2] += rng.uniform(0, 2, size=50)
    assert np.all(sc.distance(up, one_sided=True) >= sc.distance(z, one_sided=True) - 1e-12)


def test_degenerate_calibration_is_finite() -> None:
    cal = np.ones((10, 3))
    c, s = sc.center_scale(cal)
    assert np.all(s > 0)
    assert np.isfinite(sc.zscores(np.full((2, 3), 2.0), c, s)).all()
    c, s = sc.center_scale(cal, robust=True)
    assert np.all(s > 0)
    assert sc.auto_lambda(np.arange(10.0), np.zeros(10)) == 0.0
    w = sc.fold_stability_weights(cal, np.arange(10) % 2)
    assert np.isfinite(w).all() and np.all((w > 0) & (w <= 1))
    r_cal, r_test = sc.residualize(cal, np.ones(10), np.ones((2, 3)), np.ones(2))
    assert np.isfinite(r_cal).all() and np.isfinite(r_test).all()
    mean, scale = sc.reference_maps(np.zeros((4, 5, 5), dtype=np.float32))
    assert np.all(scale > 0)
    assert np.isfinite(sc.relative_maps(np.ones((1, 5, 5)), mean, scale)).all()


def test_hybrid_auto_lambda_scale_matches() -> None:
    rng = np.random.default_rng(4)
    mc, dc = rng.normal(size=30), 10.0 * rng.normal(size=30)
    lam = sc.auto_lambda(mc, dc)
    assert lam == pytest.approx(np.std(mc) / np.std(dc))
    out = sc.hybrid(np.ones(2), np.array([0.0, 1.0]), mc, dc)
    np.testing.assert_allclose(out, [1.0, 1.0 + lam])
    np.testing.assert_allclose(sc.hybrid(np.ones(2), np.ones(2), mc, dc, 0.05), [1.05, 1.05])


def test_topk_mean() -> None:
    m = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    np.testing.assert_allclose(sc.topk_mean(m, 1), [15.0, 31.0])
    np.testing.assert_allclose(sc.topk_mean(m, 2), [14.5, 30.5])
    np.testing.assert_allclose(sc.topk_mean(m, 16), m.reshape(2, -1).mean(axis=1))
    with pytest.raises(ValueError, match="k"):
        sc.topk_mean(m, 17)


def test_stability_weights_downweight_unstable_component() -> None:
    rng = np.random.default_rng(5)
    n = 100
    folds = np.arange(n) % 5
    stable = rng.normal(size=n)
    unstable = rng.normal(size=n) + 5.0 * (folds == 0)  # one fold shifted
    w = sc.fold_stability_weights(np.column_stack([stable, unstable]), folds)
    assert w[0] > 0.7
    assert w[1] < 0.5 * w[0]


def test_residualize_removes_linear_max_dependence() -> None:
    rng = np.random.default_rng(6)
    mx = rng.normal(size=200)
    phi = np.column_stack([2.0 * mx + 1.0 + 0.1 * rng.normal(size=200), rng.normal(size=200)])
    rc, rt = sc.residualize(phi, mx, np.array([[2.0 * 3.0 + 1.0, 0.0]]), np.array([3.0]))
    assert abs(np.corrcoef(rc[:, 0], mx)[0, 1]) < 1e-6
    assert abs(rt[0, 0]) < 0.1


def _mapset(seed: int = 0) -> MapSet:
    rng = np.random.default_rng(seed)
    n_cal, n_test, size = 20, 12, 24
    cal = rng.gamma(2.0, 1.0, size=(n_cal, size, size)).astype(np.float32)
    test = rng.gamma(2.0, 1.0, size=(n_test, size, size)).astype(np.float32)
    labels = np.r_[np.zeros(6), np.ones(6)].astype(np.int64)
    test[6:, 5:12, 5:12] += 4.0  # a blob on the defective ones
    cal_max = cal.reshape(n_cal, -1).max(axis=1).astype(np.float64)
    return MapSet(
        test_maps=test,
        test_max=test.reshape(n_test, -1).max(axis=1).astype(np.float64),
        labels=labels,
        defects=np.where(labels == 1, "blob", "good"),
        cal_maps={"crossfit": cal, "train": 0.9 * cal},
        cal_max={"crossfit": cal_max, "train": 0.9 * cal_max},
        folds=np.arange(n_cal) % 5,
    )


def test_every_variant_scores_every_image() -> None:
    ms = _mapset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = sc.score_variants(ms)
    # without synthetic-defect maps the learned* variants are left out
    assert set(out) == set(sc.VARIANTS) - set(sc.LEARNED)
    with pytest.raises(ValueError, match="synthetic"):
        sc.score_variants(ms, ["learned/cp+perlin"])
    from structcore.research.synthetic_defects import SyntheticMaps

    rng = np.random.default_rng(9)
    n_cal = ms.cal_maps["crossfit"].shape[0]
    syn = ms.cal_maps["crossfit"][np.repeat(np.arange(n_cal), 3)].copy()
    for i in range(syn.shape[0]):  # a blob of random place and height on every copy
        y, x = rng.integers(0, 16, size=2)
        syn[i, y : y + 6, x : x + 6] += rng.uniform(1.0, 4.0)
    synthetic = SyntheticMaps(
        syn,
        syn.reshape(syn.shape[0], -1).max(axis=1).astype(np.float64),
        np.repeat(np.arange(n_cal), 3),
        np.tile(np.array(["cutpaste", "perlin", "painter"]), n_cal),
        {},
    )
    models: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = sc.score_variants(ms, synthetic=synthetic, models=models)
    assert set(out) == set(sc.VARIANTS)
    assert set(models) == set(sc.LEARNED)
    for name, m in models.items():  # the score is the model's max + a . z on the test maps
        assert m.coef.size == 1 + len(sc.LEARNED[name][0])
    for name, s in out.items():
        assert s.shape == (12,), name
        assert np.isfinite(s).all(), name
    np.testing.assert_array_equal(out["max"], ms.test_max)
    with pytest.raises(ValueError, match="unknown"):
        sc.score_variants(ms, ["nope"])


def test_paper_variant_is_the_struct_calibrator() -> None:
    from structcore.kernels import describe

    ms = _mapset(1)
    out = sc.score_variants(ms, ["paper/l2/auto/crossfit", "paper/linf/auto/train"])
    for key, mode, norm in (
        ("paper/l2/auto/crossfit", "crossfit", "l2"),
        ("paper/linf/auto/train", "train", "linf"),
    ):
        pc = describe(ms.cal_maps[mode], ("std", "top_mean", "tv"))
        pt = describe(ms.test_maps, ("std", "top_mean", "tv"))
        cal = StructCalibrator(norm, "auto").fit(pc, ms.cal_max[mode])
        np.testing.assert_allclose(out[key], cal.score(pt, ms.test_max))


def test_degenerate_constant_maps_give_finite_scores() -> None:
    ms = _mapset(2)
    ms.cal_maps = {k: np.ones_like(v) for k, v in ms.cal_maps.items()}
    ms.cal_max = {k: np.ones_like(v) for k, v in ms.cal_max.items()}
    out = sc.score_variants(ms)
    for name, s in out.items():
        assert np.isfinite(s).all(), name


def test_conditional_residual_removes_the_covariate() -> None:
    rng = np.random.default_rng(7)
    tv = rng.normal(size=300)
    target = 3.0 * tv + 2.0 + 0.01 * rng.normal(size=300)
    r = sc.conditional_residual(target, tv, np.array([3.0 * 1.5 + 2.0 + 1.0]), np.array([1.5]))
    assert r[0] == pytest.approx(1.0, abs=0.01)  # what the covariate does not explain
    const = sc.conditional_residual(target, np.ones(300), target[:3], np.ones(3))
    np.testing.assert_allclose(const, target[:3] - target.mean(), atol=1e-9)


def test_mahalanobis_one_dimension_is_abs_z() -> None:
    rng = np.random.default_rng(8)
    cal = rng.normal(size=(200, 1)) * 2.0 + 1.0
    x = np.array([[1.0], [5.0], [-3.0]])
    c, s = sc.center_scale(cal)
    expected = np.abs((x[:, 0] - c[0]) / s[0]) / np.sqrt(1.0 + 1e-3)
    np.testing.assert_allclose(sc.mahalanobis(cal, x), expected, rtol=1e-9)


def test_novelty_direction_points_from_seen_to_unseen() -> None:
    rng = np.random.default_rng(9)
    seen = rng.normal(size=(100, 3))
    unseen = rng.normal(size=(100, 3)) + np.array([2.0, 0.0, 0.0])
    for full in (True, False):
        _, _, w = sc.novelty_direction(seen, unseen, full=full)
        assert np.linalg.norm(w) == pytest.approx(1.0)
        assert w[0] > 0.9
