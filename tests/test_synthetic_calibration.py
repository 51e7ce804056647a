"""Detector(calibration="synthetic"): synthetic defects of the train images, scored by the
cross-fit banks that hold none of their source image's patches, and the learned score
``max + a . z``: fit, predict, save, load, the public pieces, and bad inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from structcore import Detector
from structcore.calibration import CalibrationWarning
from structcore.defects import SYNTHETIC_MAKERS, defect_images
from structcore.io import BASE_VERSION, FORMAT_VERSION, read_model_file
from structcore.learned_calibration import linear_score

SMALL = dict(backbone="resnet18", weights=None, dim=24, resize=40, crop=40, folds=3, seed=0)


def _images(n: int, seed: int, defect: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(80, 160, 40, dtype=np.float32)[None, :, None]
    imgs = np.clip(base + rng.normal(0, 5, size=(n, 40, 40, 3)), 0, 255).astype(np.uint8)
    if defect:
        for i in range(n):
            r, c = rng.integers(6, 26, size=2)
            imgs[i, r : r + 8, c : c + 8] = 255 if i % 2 else 0
    return imgs


@pytest.fixture(scope="module")
def train() -> np.ndarray:
    return _images(7, 3)


@pytest.fixture(scope="module")
def test_set() -> np.ndarray:
    return np.concatenate([_images(3, 4), _images(3, 5, defect=True)])


def _fit(images: np.ndarray, **extra: object) -> Detector:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)  # a tiny fit may fall back
        return Detector(**{**SMALL, "calibration": "synthetic", **extra}).fit(images)


@pytest.fixture(scope="module")
def fitted(train: np.ndarray) -> Detector:
    return _fit(train)


def test_fit_sets_the_learned_state(fitted: Detector) -> None:
    det = fitted
    n, m = 7, len(SYNTHETIC_MAKERS)
    assert det.calibration_modes_ == ("crossfit", "train")  # variants=True: both maps
    assert det.lambda_ == 0.0
    assert det.weights_.shape == (3,) and np.isfinite(det.weights_).all()
    assert det.synthetic_phi_.shape == (n * m, 3) and det.synthetic_max_.shape == (n * m,)
    np.testing.assert_array_equal(np.sort(det.synthetic_sources_), np.repeat(np.arange(n), m))
    np.testing.assert_array_equal(det.weights_, det.learned_.a)
    assert det.pixel_threshold_ == det.pixel_thresholds_["crossfit"]
    # the threshold: the threshold_quantile quantile of the cross-fitted good learned scores
    cols = [det.stored_components_.index(c) for c in det.components_]
    z = (det.train_phi_["crossfit"][:, cols] - det.mu_) / det.sigma_
    good = linear_score(det.train_max_["crossfit"], z, det.weights_)
    assert det.decision_threshold_ == float(np.quantile(good, det.threshold_quantile))
    assert "synthetic" in det.fit_timings_
    # variants=False computes the cross-fitted maps only
    only = _fit(_images(7, 3), variants=False)
    assert only.calibration_modes_ == ("crossfit",)
    np.testing.assert_array_equal(only.weights_, det.weights_)


def test_predict_is_max_plus_weighted_z(fitted: Detector, test_set: np.ndarray) -> None:
    pred = fitted.predict(test_set)
    z = (pred.descriptor - fitted.mu_) / fitted.sigma_
    np.testing.assert_array_equal(pred.z, z)
    np.testing.assert_array_equal(pred.score, linear_score(pred.score_max, z, fitted.weights_))
    np.testing.assert_allclose(pred.score_struct, np.linalg.norm(z, axis=1), rtol=1e-12)
    np.testing.assert_array_equal(pred.is_anomalous, pred.score > fitted.decision_threshold_)
    # stages compose to predict; the variant grid's configured score is the learned one
    st = fitted.stages()
    assert st.calibrator.weights_ is fitted.weights_
    grid = fitted.variant_scores(pred.maps, pred.score_max)
    np.testing.assert_array_equal(grid["structcore"], pred.score)
    assert "paper/l2/auto/crossfit" in grid


def test_seeded_and_deterministic(fitted: Detector, train: np.ndarray) -> None:
    again = _fit(train)
    np.testing.assert_array_equal(again.synthetic_max_, fitted.synthetic_max_)
    np.testing.assert_array_equal(again.weights_, fitted.weights_)
    other = _fit(train, seed=1)
    assert not np.array_equal(other.synthetic_max_, fitted.synthetic_max_)


def test_save_load_round_trip(fitted: Detector, test_set: np.ndarray, tmp_path) -> None:
    path = tmp_path / "syn.npz"
    fitted.save(path)
    meta, arrays = read_model_file(path)
    assert meta["version"] == FORMAT_VERSION == 3 and meta["calibration"] == "synthetic"
    np.testing.assert_array_equal(arrays["weights"], fitted.weights_)
    assert meta["fitted"]["lambda"] == 0.0
    loaded = Detector.load(path)
    assert loaded.calibration == "synthetic"
    np.testing.assert_array_equal(loaded.weights_, fitted.weights_)
    a, b = loaded.predict(test_set), fitted.predict(test_set)
    for field in ("score", "score_max", "score_struct", "is_anomalous"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    # models without learned weights are still written as version 2
    plain = Detector(**SMALL, variants=False, calibration="train").fit(_images(4, 6))
    plain.save(tmp_path / "plain.npz")
    meta, arrays = read_model_file(tmp_path / "plain.npz")
    assert meta["version"] == BASE_VERSION == 2 and "weights" not in arrays
    assert Detector.load(tmp_path / "plain.npz").weights_ is None


def test_public_pieces_reproduce_fit(fitted: Detector, train: np.ndarray) -> None:
    det = Detector(**SMALL, calibration="synthetic")
    feats = det.features(train)
    dfeat, src = det.defect_features(train)
    assert dfeat.shape == (14, *feats.shape[1:]) and src.dtype == np.int64
    # fold by fold (the cross-fit folds), image by image, maker by maker
    folds = det.crossfit_folds(7)
    assert np.all(np.diff(folds[src]) >= 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        again = det.fit_features(feats, defects=(dfeat, src))
    np.testing.assert_array_equal(again.synthetic_max_, fitted.synthetic_max_)
    np.testing.assert_array_equal(again.weights_, fitted.weights_)
    assert again.decision_threshold_ == fitted.decision_threshold_
    # the defect features are those of defects.defect_images, run through the backbone
    i = int(src[0])
    imgs = defect_images(train[i], i, seed=0, resize=40, crop=40)
    np.testing.assert_array_equal(det.features(imgs, batch_size=16), dfeat[:2])
    # "synthetic" calibration maps are its good ones, the cross-fitted maps
    cal_max = fitted.calibration_maps(feats)[1]
    np.testing.assert_array_equal(cal_max, fitted.train_max_["crossfit"])
    np.testing.assert_array_equal(fitted.calibration_maps(feats, "synthetic")[1], cal_max)


@pytest.mark.parametrize("crossfit_bank", ["masked", "coreset"])
def test_no_defect_is_scored_by_a_bank_with_its_source_image(
    train: np.ndarray, crossfit_bank: str
) -> None:
    # Give each train image's own features as its "defect": a bank holding the source
    # image's patches would score it 0 everywhere (coreset_ratio=1 keeps every patch), the
    # fold bank without them gives exactly the source's own cross-fitted map.
    det = Detector(**SMALL, calibration="synthetic", coreset_ratio=1.0, crossfit_bank=crossfit_bank)
    feats = det.features(train)
    src = np.repeat(np.arange(7), 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        det.fit_features(feats, defects=(feats[src], src))
    assert np.all(det.train_max_["train"] == 0.0)  # same-train: every patch matches itself
    order = np.argsort(det.synthetic_sources_, kind="stable")
    np.testing.assert_array_equal(
        det.synthetic_max_[order], det.train_max_["crossfit"][det.synthetic_sources_[order]]
    )
    assert np.all(det.synthetic_max_ > 0)


def test_other_inputs_fit_too(train: np.ndarray) -> None:
    # float images (not exactly 8-bit) get float defects; grey 2-D images work
    x = train.astype(np.float32) / 255.0 * 0.99
    det = _fit(list(x))
    assert np.isfinite(det.weights_).all()
    grey = [im[..., 0] for im in train]
    assert np.isfinite(_fit(grey).weights_).all()


def test_bad_inputs(train: np.ndarray, fitted: Detector) -> None:
    det = Detector(**SMALL, calibration="synthetic")
    feats = fitted.features(train)
    with pytest.raises(ValueError, match="defects is required"):
        det.fit_features(feats)
    with pytest.raises(TypeError, match="defects must be a pair"):
        det.fit_features(feats, defects=feats)
    src = np.repeat(np.arange(7), 2)
    with pytest.raises(ValueError, match=r"defects\[0\] must have shape"):
        det.fit_features(feats, defects=(feats[src][:, :2], src))
    with pytest.raises(ValueError, match=r"defects\[1\] \(sources\) must be integers"):
        det.fit_features(feats, defects=(feats[src], src.astype(float)))
    with pytest.raises(ValueError, match=r"defects\[1\] \(sources\) must index"):
        det.fit_features(feats, defects=(feats[src], src + 7))
    with pytest.raises(TypeError, match=r"defects\[0\]"):
        det.fit_features(feats, defects=(feats[src].astype(np.int32), src))
    with pytest.raises(ValueError, match="defects is used only with calibration='synthetic'"):
        Detector(**SMALL, calibration="crossfit").fit_features(feats, defects=(feats[src], src))
    with pytest.raises(ValueError, match="calibration"):
        Detector(**SMALL, calibration="synth").fit(train)
    with pytest.raises(ValueError, match="folds=3 exceeds"):
        det.fit(train[:2])
    with pytest.raises(ValueError, match="folds=3 exceeds"):
        det.defect_features(train[:2])
    with pytest.raises(ValueError, match="centre crop spans"):  # 6 px images: no room
        Detector(**{**SMALL, "resize": 6, "crop": 6}, calibration="synthetic").defect_features(
            np.zeros((3, 6, 6, 3), np.uint8)
        )
    with pytest.raises(ValueError, match="mode"):
        fitted.calibration_maps(feats, "learned")
