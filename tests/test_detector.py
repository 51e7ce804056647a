"""The detector end to end (structcore.detector) on tiny inputs and a real MVTec subset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from structcore import Detector, Prediction, describe
from structcore.calibration import CalibrationWarning, StructCalibrator
from structcore.detector import NotFittedError

SMALL = dict(
    backbone="resnet18", weights=None, dim=32, resize=48, crop=48, folds=3, seed=0, lam="auto"
)


def _images(n: int, seed: int, defect: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(90, 150, 48, dtype=np.float32)[None, :, None]
    imgs = base + rng.normal(0, 6, size=(n, 48, 48, 3)).astype(np.float32)
    imgs = np.clip(imgs, 0, 255).astype(np.uint8)
    if defect:
        for i in range(n):
            r, c = rng.integers(8, 30, size=2)
            imgs[i, r : r + 10, c : c + 10] = 255 if i % 2 else 0
    return imgs


@pytest.fixture(scope="module")
def train() -> np.ndarray:
    return _images(9, 0)


@pytest.fixture(scope="module")
def test_set() -> tuple[np.ndarray, np.ndarray]:
    good, bad = _images(4, 1), _images(4, 2, defect=True)
    return np.concatenate([good, bad]), np.array([0] * 4 + [1] * 4)


@pytest.fixture(scope="module")
def fitted(train: np.ndarray) -> Detector:
    return Detector(**SMALL).fit(train)


def test_fit_returns_self_and_sets_state(train: np.ndarray) -> None:
    det = Detector(**SMALL)
    assert not hasattr(det, "bank_")
    assert det.fit(train) is det
    n_patches = 9 * 6 * 6
    assert det.bank_.shape == (round(0.1 * n_patches), 32) and det.bank_.dtype == np.float32
    assert det.components_ == ("std", "top_mean", "tv")
    assert det.calibration_modes_ == ("crossfit", "train")
    assert det.mu_.shape == det.sigma_.shape == (3,)
    assert det.lambda_ > 0 and np.isfinite(det.decision_threshold_)
    for mode in det.calibration_modes_:
        assert det.train_phi_[mode].shape == (9, len(det.stored_components_))
        assert det.train_max_[mode].shape == (9,)
    # the same-train maps are biased low (METHOD.md §3.5)
    assert det.train_max_["train"].mean() < det.train_max_["crossfit"].mean()


def test_default_score_is_max_pooling(train: np.ndarray, test_set) -> None:
    """lam=0 by default (issue 13's held-out evidence): score == score_max, D still computed."""
    x, _ = test_set
    assert Detector().lam == 0.0
    params = {k: v for k, v in SMALL.items() if k != "lam"}
    det = Detector(**params).fit(train)
    assert det.lambda_ == 0.0
    pred = det.predict(x)
    np.testing.assert_array_equal(pred.score, pred.score_max)
    assert np.isfinite(pred.score_struct).all() and (pred.score_struct > 0).any()
    np.testing.assert_array_equal(pred.is_anomalous, pred.score_max > det.decision_threshold_)
    # the paper's score is the variant grid's paper/l2/auto/train, as with lam="auto"
    paper = Detector(**SMALL).fit(train)
    np.testing.assert_array_equal(paper.bank_, det.bank_)
    v = det.variant_scores(pred.maps, pred.score_max)
    np.testing.assert_allclose(v["paper/l2/auto/train"], paper.predict(x).score, rtol=1e-10)


def test_prediction_contract(fitted: Detector, test_set) -> None:
    x, _ = test_set
    pred = fitted.predict(x)
    assert isinstance(pred, Prediction) and len(pred) == 8
    assert pred.maps.shape == (8, 48, 48) and pred.maps.dtype == np.float32
    for name in ("score_max", "score_struct", "score"):
        assert getattr(pred, name).shape == (8,)
    assert pred.descriptor.shape == pred.z.shape == (8, 3)
    assert pred.is_anomalous.dtype == bool
    np.testing.assert_allclose(pred.score_max, pred.maps.max(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(pred.score, pred.score_max + fitted.lambda_ * pred.score_struct)
    np.testing.assert_allclose(pred.z, (pred.descriptor - fitted.mu_) / fitted.sigma_)
    np.testing.assert_allclose(pred.score_struct, np.linalg.norm(pred.z, axis=1))
    np.testing.assert_array_equal(pred.is_anomalous, pred.score > fitted.decision_threshold_)
    assert set(pred.timings) >= {"features", "knn", "map", "descriptor"}
    # the synthetic defects are found
    assert pred.score[4:].min() > pred.score[:4].max()


def test_input_kinds_agree(fitted: Detector, test_set, tmp_path) -> None:
    x, _ = test_set
    ref = fitted.predict(x[:3]).score
    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        Image.fromarray(x[i]).save(p)
        paths.append(p)
    np.testing.assert_allclose(fitted.predict(paths).score, ref, rtol=1e-6)
    np.testing.assert_allclose(
        fitted.predict([Image.fromarray(a) for a in x[:3]]).score, ref, rtol=1e-6
    )
    tensor = torch.from_numpy(x[:3]).permute(0, 3, 1, 2)
    np.testing.assert_allclose(fitted.predict(tensor).score, ref, rtol=1e-6)
    np.testing.assert_allclose(fitted.predict(x[0]).score, ref[:1], rtol=1e-4)  # one image
    mixed = [x[0], np.pad(x[1], ((0, 20), (10, 10), (0, 0)), mode="edge")]  # sizes may differ
    assert fitted.predict(mixed).maps.shape == (2, 48, 48)
    one_by_one = fitted.predict(x[:3], batch_size=1).score
    np.testing.assert_allclose(one_by_one, ref, rtol=1e-4)  # conv numerics vary by batch


def test_refit_starts_fresh(train: np.ndarray) -> None:
    other = _images(6, 5)
    det = Detector(**SMALL).fit(train)
    det.set_params(variants=False, calibration="train")
    det.fit(other)
    fresh = Detector(**{**SMALL, "variants": False, "calibration": "train"}).fit(other)
    assert det.calibration_modes_ == fresh.calibration_modes_ == ("train",)
    np.testing.assert_array_equal(det.bank_, fresh.bank_)
    np.testing.assert_array_equal(det.mu_, fresh.mu_)
    assert det.n_train_ == 6
    assert det.lambda_ == fresh.lambda_
    assert det.decision_threshold_ == fresh.decision_threshold_


def test_seeds_are_deterministic(train: np.ndarray, test_set) -> None:
    x, _ = test_set
    a = Detector(**SMALL).fit(train)
    b = Detector(**SMALL).fit(train)
    np.testing.assert_array_equal(a.bank_, b.bank_)
    np.testing.assert_array_equal(a.predict(x).score, b.predict(x).score)
    c = Detector(**{**SMALL, "seed": 1}).fit(train)
    assert not np.array_equal(a.bank_, c.bank_)


def test_cpp_matches_reference_backend(train: np.ndarray, test_set) -> None:
    x, _ = test_set
    cpp = Detector(**SMALL, backend="cpp").fit(train)
    ref = Detector(**SMALL, backend="reference").fit(train)
    np.testing.assert_allclose(cpp.bank_, ref.bank_, rtol=1e-6)
    for mode in cpp.calibration_modes_:
        np.testing.assert_allclose(cpp.train_phi_[mode], ref.train_phi_[mode], rtol=1e-3, atol=1e-5)
    pc, pr = cpp.predict(x), ref.predict(x)
    np.testing.assert_allclose(pc.maps, pr.maps, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pc.score, pr.score, rtol=1e-3)
    np.testing.assert_allclose(pc.z, pr.z, rtol=1e-3, atol=1e-3)


def test_variant_scores_grid(fitted: Detector, test_set) -> None:
    x, _ = test_set
    pred = fitted.predict(x)
    v = fitted.variant_scores(pred.maps, pred.score_max)
    np.testing.assert_array_equal(v["max"], pred.score_max)
    np.testing.assert_allclose(v["structcore"], pred.score)
    np.testing.assert_allclose(v["struct_only"], pred.score_struct)
    # the configured variant (paper/l2/auto/<calibration>) re-calibrated from the stored arrays
    key = f"paper/l2/auto/{fitted.calibration}"
    np.testing.assert_allclose(v[key], pred.score, rtol=1e-10)
    for key in (
        "paper/linf/auto/crossfit",
        "paper/l2/0.05/crossfit",
        "paper/l2/auto/train",
        "extended/l2/auto/crossfit",
        "extended/linf/0.05/train",
        "struct/paper/l2/train",
    ):
        assert v[key].shape == (8,) and np.isfinite(v[key]).all()
    np.testing.assert_allclose(
        v["paper/l2/0.05/crossfit"] - v["max"], 0.05 * v["struct/paper/l2/crossfit"]
    )
    assert len(v) == 3 + 2 * 2 * 2 * 2 + 2 * 2 * 2
    # without score_max: max of the maps
    np.testing.assert_allclose(fitted.variant_scores(pred.maps)["max"], pred.score_max)
    with pytest.raises(ValueError, match="maps must have shape"):
        fitted.variant_scores(pred.maps[:, :10])
    with pytest.raises(ValueError, match="score_max"):
        fitted.variant_scores(pred.maps, pred.score_max[:2])


def test_train_calibration_and_custom_descriptor(train: np.ndarray, test_set) -> None:
    x, _ = test_set
    det = Detector(
        **{**SMALL, "lam": 0.5},
        calibration="train",
        variants=False,
        descriptor=["tv", "std"],
        norm="linf",
    ).fit(train)
    assert det.calibration_modes_ == ("train",)
    assert det.components_ == ("tv", "std") and det.lambda_ == 0.5
    pred = det.predict(x)
    cal = StructCalibrator("linf", 0.5, names=["tv", "std"])
    cols = [det.stored_components_.index(c) for c in ("tv", "std")]
    cal.fit(det.train_phi_["train"][:, cols], det.train_max_["train"])
    np.testing.assert_allclose(pred.score, cal.score(pred.descriptor, pred.score_max))
    v = det.variant_scores(pred.maps)
    assert "paper/l2/auto/train" in v and not any(k.endswith("crossfit") for k in v)


def test_reweighting(train: np.ndarray, test_set) -> None:
    x, _ = test_set
    det = Detector(**SMALL, reweight=True).fit(train)
    pred = det.predict(x)
    raw = pred.maps.max(axis=(1, 2))
    assert np.all(pred.score_max <= raw + 1e-6) and np.all(pred.score_max >= 0)
    assert np.all(pred.score_max < raw)  # a weight below 1 for every image
    maps, smax = det.anomaly_maps(det.features(x))  # the public pieces reweight alike
    np.testing.assert_array_equal(maps, pred.maps)
    np.testing.assert_array_equal(smax, pred.score_max)
    np.testing.assert_array_equal(
        det.calibration_maps(det.features(train))[1], det.train_max_["train"]
    )
    with pytest.raises(ValueError, match="score_max is required"):
        det.variant_scores(pred.maps)


def test_zero_variance_warns_with_component_names() -> None:
    same = np.repeat(_images(1, 3), 4, axis=0)  # identical train images: constant descriptors
    with pytest.warns(CalibrationWarning) as record:
        det = Detector(**{**SMALL, "folds": 2}).fit(same)
    messages = " ".join(str(w.message) for w in record)
    assert "'std'" in messages and "'top_mean'" in messages and "'tv'" in messages
    assert np.isfinite(det.sigma_).all() and np.all(det.sigma_ > 0)


@pytest.mark.parametrize(
    ("params", "exc", "match"),
    [
        ({"backbone": "vgg"}, ValueError, "backbone"),
        ({"dim": 0}, ValueError, "dim"),
        ({"crop": 64}, ValueError, "crop must be <= resize"),
        ({"coreset_ratio": 1.5}, ValueError, "coreset_ratio"),
        ({"coreset_ratio": 0}, ValueError, "coreset_ratio"),
        ({"k": 0}, ValueError, "k must be"),
        ({"k": 10_000}, ValueError, "k=10000 exceeds"),
        ({"sigma": -1.0}, ValueError, "sigma"),
        ({"descriptor": "fancy"}, ValueError, "descriptor"),
        ({"descriptor": ["std", "nope"]}, ValueError, "unknown component 'nope'"),
        ({"descriptor": []}, ValueError, "at least one"),
        ({"norm": "l1"}, ValueError, "norm"),
        ({"lam": "big"}, ValueError, "lam"),
        ({"lam": -0.1}, ValueError, "lam"),
        ({"calibration": "test"}, ValueError, "calibration"),
        ({"folds": 1}, ValueError, "folds"),
        ({"folds": 20}, ValueError, "folds=20 exceeds"),
        ({"threshold_quantile": 1.5}, ValueError, "threshold_quantile"),
        ({"pixel_quantile": 0}, ValueError, "pixel_quantile"),
        ({"reweight": "yes"}, TypeError, "reweight"),
        ({"seed": -1}, ValueError, "seed"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"backend": "cuda"}, ValueError, "backend"),
        ({"threads": 0}, ValueError, "threads"),
        ({"device": "tpu"}, ValueError, "device"),
    ],
)
def test_bad_parameters(train: np.ndarray, params: dict, exc: type, match: str) -> None:
    det = Detector(**{**SMALL, **params})  # __init__ only stores
    with pytest.raises(exc, match=match):
        det.fit(train)


def test_bad_images_and_unfitted(train: np.ndarray) -> None:
    with pytest.raises(NotFittedError, match="not fitted"):
        Detector(**SMALL).predict(train)
    with pytest.raises(ValueError, match="at least 2"):
        Detector(**SMALL).fit(train[:1])
    with pytest.raises(ValueError, match="at least one image"):
        Detector(**SMALL).fit([])
    with pytest.raises(TypeError, match="dtype"):
        Detector(**SMALL).fit(train.astype(np.int32))
    with pytest.raises(TypeError):
        Detector(**SMALL).fit(42)
    with pytest.raises(ValueError, match="invalid parameter"):
        Detector().set_params(nope=1)


# ------------------------------------------------------------------------------------------
# the public pieces: features, fit_features, anomaly_maps, calibration_maps, crossfit_folds


def test_public_pieces_reproduce_fit_and_predict(fitted: Detector, train, test_set) -> None:
    x, _ = test_set
    f_train = fitted.features(train)
    assert f_train.shape == (9, 6, 6, 32) and f_train.dtype == np.float32
    assert fitted.feature_grid_ == (6, 6) and fitted.feature_dim_ == 32
    pred_train = fitted.predict(train)
    for mode in ("crossfit", "train"):
        maps, smax = fitted.calibration_maps(f_train, mode)
        assert maps.shape == (9, 48, 48) and maps.dtype == np.float32
        assert smax.shape == (9,) and smax.dtype == np.float64
        # exactly what fit calibrated on
        np.testing.assert_array_equal(smax, fitted.train_max_[mode])
        t = fitted.pixel_thresholds_[mode]
        assert t == float(np.quantile(maps, fitted.pixel_quantile))
        phi = describe(maps, fitted.stored_components_, threshold=t)
        np.testing.assert_array_equal(np.asarray(phi, np.float64), fitted.train_phi_[mode])
        if mode == "train":  # same-train maps = predict on the train images
            np.testing.assert_array_equal(maps, pred_train.maps)
            np.testing.assert_array_equal(smax, pred_train.score_max)
    default = fitted.calibration_maps(f_train)  # mode None: the configured calibration
    np.testing.assert_array_equal(default[1], fitted.train_max_[fitted.calibration])

    pred = fitted.predict(x)
    maps, smax = fitted.anomaly_maps(fitted.features(x))
    np.testing.assert_array_equal(maps, pred.maps)
    np.testing.assert_array_equal(smax, pred.score_max)
    v = fitted.variant_scores(maps, smax)
    np.testing.assert_array_equal(v["structcore"], pred.score)
    np.testing.assert_array_equal(v["struct_only"], pred.score_struct)
    # chunking is memory only; float64 input is converted to the same float32
    one = fitted.anomaly_maps(fitted.features(x).astype(np.float64), batch_size=1)
    np.testing.assert_array_equal(one[0], maps)
    np.testing.assert_array_equal(one[1], smax)


def test_fit_features_equals_fit(fitted: Detector, train, test_set, tmp_path) -> None:
    x, _ = test_set
    f_unfitted = Detector(**SMALL).features(train)  # before fit: the backbone of the params
    np.testing.assert_array_equal(f_unfitted, fitted.features(train))
    pred = fitted.predict(x)
    for bank in (None, fitted.bank_):
        det = Detector(**SMALL).fit_features(f_unfitted, bank=bank)
        np.testing.assert_array_equal(det.bank_, fitted.bank_)
        assert det.bank_ is not fitted.bank_  # a given bank is copied
        for name in ("mu_", "sigma_", "lambda_", "decision_threshold_", "pixel_threshold_"):
            np.testing.assert_array_equal(getattr(det, name), getattr(fitted, name))
        for mode in fitted.calibration_modes_:
            np.testing.assert_array_equal(det.train_phi_[mode], fitted.train_phi_[mode])
            np.testing.assert_array_equal(det.train_max_[mode], fitted.train_max_[mode])
        assert det.n_train_ == 9 and det.feature_grid_ == (6, 6) and det.feature_dim_ == 32
        assert det.weights_sha256_ == fitted.weights_sha256_
        got = det.predict(x)
        for field in ("maps", "score_max", "score", "is_anomalous"):
            np.testing.assert_array_equal(getattr(got, field), getattr(pred, field))
    det.save(tmp_path / "ff.npz")
    fitted.save(tmp_path / "fit.npz")
    assert (tmp_path / "ff.npz").read_bytes() == (tmp_path / "fit.npz").read_bytes()


@pytest.mark.parametrize("crossfit_bank", ["coreset", "masked"])
def test_crossfit_folds_and_maps(train, crossfit_bank: str) -> None:
    from structcore.crossfit import locate_rows

    det = Detector(**SMALL, crossfit_bank=crossfit_bank).fit(train)
    f_train = det.features(train)
    folds = det.crossfit_folds(9)
    assert folds.dtype == np.int64 and np.bincount(folds).tolist() == [3, 3, 3]
    perm = np.random.default_rng(SMALL["seed"]).permutation(9)
    assert folds[perm].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    maps, smax = det.calibration_maps(f_train, "crossfit")
    np.testing.assert_array_equal(smax, det.train_max_["crossfit"])
    sources = locate_rows(det.bank_, f_train)
    for i in range(3):
        if crossfit_bank == "coreset":
            # fold i against a detector fitted on the other folds' features alone
            other = Detector(**SMALL).fit_features(f_train[folds != i])
        else:
            # fold i against the final bank without the rows selected from fold i's images
            rows = det.bank_[folds[sources] != i]
            other = Detector(**SMALL).fit_features(f_train[folds != i], bank=rows)
        m, x = other.anomaly_maps(f_train[folds == i])
        np.testing.assert_array_equal(m, maps[folds == i])
        np.testing.assert_array_equal(x, smax[folds == i])


def test_public_pieces_bad_input(fitted: Detector, train) -> None:
    f = fitted.features(train[:4])
    with pytest.raises(NotFittedError):
        Detector(**SMALL).anomaly_maps(f)
    with pytest.raises(NotFittedError):
        Detector(**SMALL).calibration_maps(f)
    cases = [
        (f.astype(np.int32), TypeError, "features must be a floating-point"),
        (f[0], ValueError, "features must be 4-dimensional"),
        (f[:0], ValueError, "features must not be empty"),
        (f[..., :16], ValueError, r"features must have shape \(N, 6, 6, 32\)"),
        (f[:, :5], ValueError, r"features must have shape \(N, 6, 6, 32\)"),
        (np.where(f == f.max(), np.nan, f), ValueError, "features must be finite"),
    ]
    for bad, exc, match in cases:
        with pytest.raises(exc, match=match):
            fitted.anomaly_maps(bad)
        with pytest.raises(exc, match=match):
            fitted.calibration_maps(bad, "train")
    with pytest.raises(ValueError, match="batch_size"):
        fitted.anomaly_maps(f, batch_size=0)
    with pytest.raises(ValueError, match="mode must be one of"):
        fitted.calibration_maps(f, "test")
    with pytest.raises(ValueError, match="folds=3"):
        fitted.calibration_maps(f[:2], "crossfit")
    with pytest.raises(ValueError, match="n_images"):
        fitted.crossfit_folds(2)
    with pytest.raises(TypeError, match="n_images"):
        fitted.crossfit_folds(9.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        fitted.features(train[:2], batch_size=0)

    det = Detector(**SMALL).fit_features(f)
    bank = det.bank_.copy()
    fit_cases = [
        (dict(features=f[:1]), ValueError, "features: fit needs at least 2"),
        (dict(features=f[:2]), ValueError, "folds=3 exceeds the 2 train images"),
        (dict(features=f.astype(np.int32)), TypeError, "features must be a floating-point"),
        (dict(features=f[..., :16]), ValueError, r"features must have shape \(N, 6, 6, 32\)"),
        (dict(features=f[:, :5, :5]), ValueError, r"features must have shape \(N, 6, 6, 32\)"),
        (dict(features=f, bank=bank[:, :16]), ValueError, "bank must have 32 columns"),
        (dict(features=f, bank=bank[0]), ValueError, "bank must be 2-dimensional"),
        (dict(features=f, bank=bank.astype(int)), TypeError, "bank must be a floating-point"),
        (dict(features=f, bank=bank * np.inf), ValueError, "bank must be finite"),
        (dict(features=f, bank=bank[:0]), ValueError, "bank must not be empty"),
    ]
    for kw, exc, match in fit_cases:
        with pytest.raises(exc, match=match):
            det.fit_features(**kw)
        np.testing.assert_array_equal(det.bank_, bank)  # a rejected call keeps the fit
    with pytest.raises(ValueError, match="bank: k=2 exceeds its 1 rows"):
        Detector(**{**SMALL, "k": 2}).fit_features(f, bank=bank[:1])
    with pytest.raises(ValueError, match="norm"):
        Detector(**{**SMALL, "norm": "l1"}).fit_features(f)


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def test_mvtec_bottle_subset(mvtec_bottle, torch_home, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    train = sorted((mvtec_bottle / "train" / "good").glob("*.png"))[:20]
    good = sorted((mvtec_bottle / "test" / "good").glob("*.png"))[:10]
    bad = [
        p
        for d in ("broken_large", "broken_small", "contamination")
        for p in sorted((mvtec_bottle / "test" / d).glob("*.png"))[:4]
    ][:10]
    det = Detector("mobilenet_v2", coreset_ratio=0.05, batch_size=10).fit(train)
    pred = det.predict(good + bad)
    labels = np.array([0] * len(good) + [1] * len(bad))
    assert _auroc(labels, pred.score_max) > 0.8
    assert _auroc(labels, pred.score) > 0.8
    # cross-fitting keeps good test images near the calibration (METHOD.md §3.5): z of
    # top_mean under same-train calibration is far larger than under cross-fit calibration
    v_top = det.stored_components_.index("top_mean")
    z = {}
    for mode in ("crossfit", "train"):
        cal = StructCalibrator(names=["top_mean"]).fit(
            det.train_phi_[mode][:, [v_top]], det.train_max_[mode]
        )
        z[mode] = cal.zscores(pred.descriptor[: len(good), [1]]).mean()
    assert z["train"] > z["crossfit"] + 1.0


def test_bfloat16_backbone_fits_saves_and_loads(
    train: np.ndarray, test_set: tuple[np.ndarray, np.ndarray], fitted: Detector, tmp_path
) -> None:
    det = Detector(**SMALL, backbone_precision="bfloat16").fit(train)
    assert det.extractor_.precision == "bfloat16"
    x, _ = test_set
    pred = det.predict(x)
    ref = fitted.predict(x)  # the float32 twin: close maps, not identical ones
    assert pred.maps.dtype == np.float32 and pred.maps.shape == ref.maps.shape
    assert not np.array_equal(pred.maps, ref.maps)
    np.testing.assert_allclose(pred.maps, ref.maps, rtol=0.2, atol=0.2 * float(ref.maps.max()))
    det.save(tmp_path / "bf16.npz")
    back = Detector.load(tmp_path / "bf16.npz")
    assert back.backbone_precision == "bfloat16" and back.extractor_.precision == "bfloat16"
    np.testing.assert_array_equal(back.predict(x).score, pred.score)
    with pytest.raises(ValueError, match="backbone_precision"):
        Detector(**SMALL, backbone_precision="half").fit(train)
