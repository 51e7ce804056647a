"""The learned [max, phi] score (structcore.learned_calibration) and StructCalibrator.fit_synthetic:
the fit on constructed data where the right direction is known, its fallback, its checks."""

from __future__ import annotations

import numpy as np
import pytest

from structcore import learned_calibration as lc
from structcore.calibration import CalibrationWarning, StructCalibrator


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
    m = lc.fit_learned_score(mg, pg, md, pd, components=("c0", "c1"))
    assert not m.fallback and m.coef[0] > 0  # max coefficient positive
    assert np.sign(m.a[0]) == sign
    assert abs(m.a[1]) < abs(m.a[0]) / 3
    assert set(m.cv) == set(lc.ALPHAS) and m.alpha in lc.ALPHAS
    # the score separates better than max alone on fresh data
    mg2, pg2, md2, pd2 = _toy(sign=sign, seed=1)
    y = np.r_[np.zeros(200), np.ones(200)]
    s = m.score(np.r_[mg2, md2], np.vstack([pg2, pd2]))
    assert lc._auroc(y, s) > lc._auroc(y, np.r_[mg2, md2]) + 0.05


def test_learned_score_is_monotone_in_max_and_linear_in_z() -> None:
    mg, pg, md, pd = _toy()
    m = lc.fit_learned_score(mg, pg, md, pd, components=("c0", "c1"), alphas=(1.0,))
    phi = np.random.default_rng(2).normal(size=(5, 2))
    base = m.score(np.zeros(5), phi)
    np.testing.assert_allclose(m.score(np.full(5, 0.7), phi) - base, 0.7)
    z = (phi - m.mu[1:]) / m.sigma[1:]
    np.testing.assert_allclose(base, z @ m.a)
    # linear_score adds a_j z_j in index order (the C++ Scorer's order)
    want = np.zeros(5)
    for j in range(2):
        want = want + m.a[j] * z[:, j]
    np.testing.assert_array_equal(lc.linear_score(np.zeros(5), z, m.a), 0.0 + want)
    st = m.state()
    assert st["components"] == ["c0", "c1"] and len(st["a"]) == 2


def test_fallback_to_max_when_the_max_coefficient_is_not_positive() -> None:
    rng = np.random.default_rng(0)
    mg, pg = rng.normal(size=100) + 1.0, rng.normal(size=(100, 1))
    md, pd = rng.normal(size=100) - 1.0, rng.normal(size=(100, 1)) + 1.0  # max *drops*
    m = lc.fit_learned_score(mg, pg, md, pd, components=("c",), alphas=(0.1,))
    assert m.fallback and np.all(m.a == 0)
    np.testing.assert_array_equal(m.score(mg, pg), mg)


def test_fallback_when_the_fit_is_degenerate() -> None:
    # identical constant rows in both classes: nothing separates them, every coefficient is 0
    mg, pg = np.ones(20), np.ones((20, 3))
    m = lc.fit_learned_score(mg, pg, mg[:10], pg[:10], components=("a", "b", "c"))
    assert m.fallback and np.all(m.a == 0) and np.all(m.coef == 0)


def test_fit_is_deterministic() -> None:
    mg, pg, md, pd = _toy()
    a = lc.fit_learned_score(mg, pg, md, pd, components=("c0", "c1"))
    b = lc.fit_learned_score(mg, pg, md, pd, components=("c0", "c1"))
    np.testing.assert_array_equal(a.a, b.a)
    assert a.alpha == b.alpha and a.cv == b.cv


def test_grouped_cv_with_few_groups() -> None:
    mg, pg, md, pd = _toy(n=6)
    groups = np.arange(6)
    m = lc.fit_learned_score(
        mg, pg, md, pd, components=("c0", "c1"), groups_good=groups, groups_defect=groups
    )
    assert m.alpha in lc.ALPHAS and set(m.cv) == set(lc.ALPHAS)
    # one group: no cross-validation possible, the strongest regularisation is taken
    one = np.zeros(6, dtype=np.int64)
    m = lc.fit_learned_score(
        mg, pg, md, pd, components=("c0", "c1"), groups_good=one, groups_defect=one
    )
    assert m.cv == {} and m.alpha == max(lc.ALPHAS)


def test_fit_logistic_matches_sklearn_unpenalised_intercept() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    z = rng.normal(size=(300, 3))
    y = (z @ np.array([1.0, -0.5, 0.0]) + rng.logistic(size=300) > 0).astype(int)
    coef, b0 = lc.fit_logistic(z, y, alpha=0.1, penalty=np.ones(3))
    # sklearn: C * sum loss + 1/2 ||w||^2  ==  mean loss + alpha/2 ||w||^2 with C = 1/(alpha n)
    sk = LogisticRegression(C=1.0 / (0.1 * 300), tol=1e-10, max_iter=10000).fit(z, y)
    np.testing.assert_allclose(coef, sk.coef_[0], atol=1e-4)
    np.testing.assert_allclose(b0, sk.intercept_[0], atol=1e-4)


def test_bad_inputs_raise_naming_the_argument() -> None:
    mg, pg, md, pd = _toy(n=20)
    c = ("c0", "c1")
    cases = [
        (dict(max_good=mg[:5]), ValueError, "phi_good"),
        (dict(phi_good=pg[:, :1]), ValueError, "components"),
        (dict(max_defect=np.r_[md[:-1], np.nan]), ValueError, "max_defect must be finite"),
        (dict(phi_defect=pd.astype(bool)), TypeError, "phi_defect"),
        (dict(max_good=mg[:0]), ValueError, "max_good"),
        (dict(groups_good=np.zeros(3, dtype=int)), ValueError, "groups_good"),
        (dict(groups_defect=np.zeros(20)), ValueError, "groups_defect"),
        (dict(alphas=()), ValueError, "alphas"),
        (dict(alphas=(-1.0,)), ValueError, "alphas"),
        (dict(folds=1), ValueError, "folds"),
        (dict(seed=-1), ValueError, "seed"),
    ]
    for change, exc, match in cases:
        kw = dict(max_good=mg, phi_good=pg, max_defect=md, phi_defect=pd, components=c)
        kw.update(change)
        with pytest.raises(exc, match=match):
            lc.fit_learned_score(**kw)


# --------------------------------------------------------------------------- the calibrator


def test_fit_synthetic_is_fit_standardisation_plus_the_learned_weights() -> None:
    mg, pg, md, pd = _toy(sign=-1.0)
    src = np.arange(200)
    cal = StructCalibrator("l2", "auto", 0.9).fit_synthetic(pg, mg, pd, md, defect_sources=src)
    hybrid = StructCalibrator("l2", "auto", 0.9).fit(pg, mg)
    np.testing.assert_array_equal(cal.mu_, hybrid.mu_)
    np.testing.assert_array_equal(cal.sigma_, hybrid.sigma_)
    m = lc.fit_learned_score(
        mg, pg, md, pd, components=("phi[0]", "phi[1]"), groups_good=src, groups_defect=src
    )
    np.testing.assert_array_equal(cal.weights_, m.a)
    np.testing.assert_array_equal(cal.learned_.mu[1:], cal.mu_)  # one standardisation
    assert cal.lambda_ == 0.0 and cal.weights_[0] < 0
    z, d, s = cal.transform(pg, mg)
    np.testing.assert_array_equal(s, lc.linear_score(mg, z, cal.weights_))
    np.testing.assert_array_equal(d, hybrid.distance(pg))  # D still reported
    assert cal.decision_threshold_ == float(np.quantile(s, 0.9))
    np.testing.assert_array_equal(cal.decide(s), s > cal.decision_threshold_)
    # restored from stored numbers it scores the same
    back = StructCalibrator()._restore(
        cal.mu_, cal.sigma_, 0.0, cal.decision_threshold_, weights=cal.weights_
    )
    np.testing.assert_array_equal(back.score(pg, mg), s)


def test_fit_synthetic_checks_its_arrays() -> None:
    mg, pg, md, pd = _toy(n=20)
    cal = StructCalibrator()
    with pytest.raises(ValueError, match="defect_phi must have 2 components"):
        cal.fit_synthetic(pg, mg, pd[:, :1], md)
    with pytest.raises(ValueError, match="defect_max must have shape"):
        cal.fit_synthetic(pg, mg, pd, md[:3])
    with pytest.raises(ValueError, match="defect_sources must lie in"):
        cal.fit_synthetic(pg, mg, pd, md, defect_sources=np.full(20, 20))
    with pytest.raises(ValueError, match="defect_sources must be integers"):
        cal.fit_synthetic(pg, mg, pd, md, defect_sources=np.zeros(20))
    with pytest.raises(TypeError, match="phi"):
        cal.fit_synthetic(pg.astype(bool), mg, pd, md)


def test_fit_synthetic_warns_on_fallback() -> None:
    rng = np.random.default_rng(0)
    mg, pg = rng.normal(size=50) + 1.0, rng.normal(size=(50, 1))
    md, pd = rng.normal(size=50) - 1.0, rng.normal(size=(50, 1)) + 1.0
    with pytest.warns(CalibrationWarning, match="falling back to max pooling"):
        cal = StructCalibrator().fit_synthetic(pg, mg, pd, md)
    assert cal.learned_.fallback and np.all(cal.weights_ == 0)
    np.testing.assert_array_equal(cal.score(pg, mg), mg)


def test_research_modules_re_export_the_product() -> None:
    from structcore import defects
    from structcore.research import learned_score, synthetic_defects

    assert learned_score.fit_learned_score is lc.fit_learned_score
    assert learned_score.LearnedScore is lc.LearnedScore
    assert synthetic_defects.make_defect is defects.make_defect
    assert synthetic_defects.MAKERS == defects.MAKERS
