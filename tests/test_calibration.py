"""StructCore calibration (structcore.calibration)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from structcore.calibration import CalibrationWarning, StructCalibrator


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    phi = rng.normal(loc=[1.0, 5.0, 0.1], scale=[0.2, 2.0, 0.01], size=(40, 3))
    mx = rng.normal(3.0, 0.5, size=40)
    return phi, mx


def test_fit_statistics_match_numpy(data) -> None:
    phi, mx = data
    cal = StructCalibrator().fit(phi, mx)
    np.testing.assert_allclose(cal.mu_, phi.mean(0))
    np.testing.assert_allclose(cal.sigma_, phi.std(0))
    z = (phi - phi.mean(0)) / phi.std(0)
    d = np.linalg.norm(z, axis=1)
    np.testing.assert_allclose(cal.lambda_, mx.std() / d.std())
    np.testing.assert_allclose(cal.decision_threshold_, np.quantile(mx + cal.lambda_ * d, 0.99))
    zz, dd, ss = cal.transform(phi, mx)
    np.testing.assert_allclose(zz, z)
    np.testing.assert_allclose(dd, d)
    np.testing.assert_allclose(ss, mx + cal.lambda_ * d)
    np.testing.assert_array_equal(cal.score(phi, mx), ss)
    assert cal.decide(ss).sum() == 1  # 1% of 40 images above the 0.99 quantile (strict >)
    # scale matching: the D term has the same spread as max on the calibration set
    np.testing.assert_allclose((cal.lambda_ * dd).std(), mx.std())


def test_linf_and_fixed_lambda(data) -> None:
    phi, mx = data
    cal = StructCalibrator(norm="linf", lam=0.05, threshold_quantile=0.5).fit(phi, mx)
    z = (phi - phi.mean(0)) / phi.std(0)
    np.testing.assert_allclose(cal.distance(phi), np.abs(z).max(1))
    assert cal.lambda_ == 0.05
    np.testing.assert_allclose(cal.decision_threshold_, np.median(mx + 0.05 * np.abs(z).max(1)))
    assert StructCalibrator(lam=0).fit(phi, mx).lambda_ == 0.0


def test_zero_variance_component_is_floored_and_named(data) -> None:
    phi, mx = data
    phi = phi.copy()
    phi[:, 1] = 7.0
    with pytest.warns(CalibrationWarning, match="'cc_count'"):
        cal = StructCalibrator(names=["std", "cc_count", "tv"]).fit(phi, mx)
    assert cal.floored_ == ("cc_count",)
    assert cal.sigma_[1] == pytest.approx(1e-6 * 7.0)
    z = cal.zscores(phi)
    assert np.isfinite(z).all() and np.all(z[:, 1] == 0)
    assert np.isfinite(cal.lambda_) and cal.lambda_ > 0


def test_degenerate_distance_sets_lambda_zero() -> None:
    with pytest.warns(CalibrationWarning):
        cal = StructCalibrator().fit(np.ones((1, 2)), np.array([2.0]))
    assert cal.lambda_ == 0.0
    assert cal.decision_threshold_ == 2.0


def test_bad_inputs(data) -> None:
    phi, mx = data
    with pytest.raises(ValueError, match="norm"):
        StructCalibrator(norm="l1").fit(phi, mx)
    with pytest.raises(ValueError, match="lam"):
        StructCalibrator(lam="big").fit(phi, mx)
    with pytest.raises(ValueError, match="lam"):
        StructCalibrator(lam=-1.0).fit(phi, mx)
    with pytest.raises(TypeError, match="lam"):
        StructCalibrator(lam=True).fit(phi, mx)
    with pytest.raises(ValueError, match="threshold_quantile"):
        StructCalibrator(threshold_quantile=0.0).fit(phi, mx)
    with pytest.raises(ValueError, match="names"):
        StructCalibrator(names=["a"]).fit(phi, mx)
    with pytest.raises(ValueError, match="max_scores"):
        StructCalibrator().fit(phi, mx[:-1])
    with pytest.raises(ValueError, match="2-dimensional"):
        StructCalibrator().fit(phi[:, 0], mx)
    with pytest.raises(ValueError, match="empty"):
        StructCalibrator().fit(np.zeros((0, 3)), np.zeros(0))
    bad = phi.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        StructCalibrator().fit(bad, mx)
    with pytest.raises(TypeError, match="real-valued"):
        StructCalibrator().fit(phi.astype(complex), mx)
    with pytest.raises(RuntimeError, match="not fitted"):
        StructCalibrator().zscores(phi)
    cal = StructCalibrator().fit(phi, mx)
    with pytest.raises(ValueError, match="3 components"):
        cal.transform(phi[:, :2], mx)


@given(
    phi=arrays(
        np.float64,
        st.tuples(st.integers(2, 30), st.integers(1, 6)),
        elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    ),
    seed=st.integers(0, 2**16),
)
def test_random_inputs_give_finite_scores(phi: np.ndarray, seed: int) -> None:
    mx = np.random.default_rng(seed).uniform(0, 10, size=phi.shape[0])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        cal = StructCalibrator().fit(phi, mx)
    z, d, s = cal.transform(phi, mx)
    assert np.isfinite(z).all() and np.isfinite(d).all() and np.isfinite(s).all()
    assert np.all(d >= 0) and cal.lambda_ >= 0
    assert np.all(cal.sigma_ > 0)
    assert cal.decision_threshold_ <= s.max() + 1e-9 * (1 + abs(s.max()))
