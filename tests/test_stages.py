"""The detector's stages as their own types: each equals its kernel/reference, and composed
they are exactly ``fit``/``predict`` (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from structcore import Detector, kernels, reference
from structcore.calibration import CalibrationWarning, StructCalibrator
from structcore.crossfit import crossfit_folds, crossfit_maps, fold_parts
from structcore.descriptor import (
    EXTENDED_COMPONENTS,
    PAPER_COMPONENTS,
    Descriptor,
    pixel_threshold,
    resolve_components,
)
from structcore.io import DetectorState, read_state, write_state
from structcore.maps import AnomalyMapper
from structcore.memory_bank import MemoryBank, bank_size

SMALL = dict(
    backbone="resnet18", weights=None, dim=24, resize=40, crop=40, folds=3, seed=0, lam="auto"
)


@pytest.fixture(scope="module")
def train() -> np.ndarray:
    rng = np.random.default_rng(3)
    base = np.linspace(80, 160, 40, dtype=np.float32)[None, :, None]
    imgs = base + rng.normal(0, 5, size=(7, 40, 40, 3)).astype(np.float32)
    return np.clip(imgs, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def fitted(train: np.ndarray) -> Detector:
    return Detector(**SMALL).fit(train)


def _feats(n: int = 3, h: int = 4, w: int = 5, d: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, h, w, d)).astype(np.float32)


# ------------------------------------------------------------------------------- MemoryBank


@pytest.mark.parametrize("backend", ["cpp", "reference"])
def test_memory_bank_build_is_the_coreset(backend: str) -> None:
    f = _feats()
    bank = MemoryBank.build(f, 0.25, projection_dim=None, seed=1, backend=backend)
    flat = f.reshape(-1, 8)
    n = bank_size(flat.shape[0], 0.25)
    idx = reference.coreset(flat, n, projection_dim=None, seed=1)
    np.testing.assert_array_equal(bank.vectors, flat[idx])
    assert len(bank) == n and bank.dim == 8 and bank.vectors.dtype == np.float32


def test_memory_bank_keeps_everything_at_ratio_one_as_a_copy() -> None:
    f = _feats()
    bank = MemoryBank.build(f, 1.0, projection_dim=16, seed=0)
    np.testing.assert_array_equal(bank.vectors, f.reshape(-1, 8))
    assert not np.shares_memory(bank.vectors, f)


@pytest.mark.parametrize("k", [1, 3])
def test_memory_bank_search_matches_reference_knn(k: int) -> None:
    f, bank_rows = _feats(seed=1), _feats(n=2, seed=2).reshape(-1, 8)
    scores, nearest = MemoryBank(bank_rows).search(f, k)
    d, i = reference.knn(f.reshape(-1, 8), bank_rows, k)
    want = d[:, 0] if k == 1 else d.mean(axis=1, dtype=np.float32)
    np.testing.assert_allclose(scores.reshape(-1), want, rtol=1e-5)
    np.testing.assert_array_equal(nearest.reshape(-1), i[:, 0])
    assert scores.shape == nearest.shape == (3, 4, 5)


def test_memory_bank_reweight_is_in_unit_interval() -> None:
    f, bank_rows = _feats(seed=1), _feats(n=2, seed=2).reshape(-1, 8)
    bank = MemoryBank(bank_rows)
    w = bank.reweight(f, *bank.search(f, 1))
    assert w.shape == (3,) and np.all((w >= 0) & (w < 1))
    w_ref = MemoryBank(bank_rows, backend="reference").reweight(f, *bank.search(f, 1))
    np.testing.assert_allclose(w, w_ref, rtol=1e-12)


# ---------------------------------------------------------------------------- AnomalyMapper


def test_anomaly_mapper_is_the_kernel_and_max() -> None:
    s = np.random.default_rng(0).random((2, 6, 6), dtype=np.float32)
    mapper = AnomalyMapper(48, 4.0)
    maps = mapper(s)
    np.testing.assert_array_equal(maps, kernels.anomaly_map(s, 48, sigma=4.0))
    np.testing.assert_array_equal(mapper.max_scores(maps), maps.max(axis=(1, 2)))
    assert mapper.max_scores(maps).dtype == np.float64
    ref = AnomalyMapper(48, 4.0, backend="reference")(s)
    np.testing.assert_allclose(ref, maps, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------- Descriptor


def test_descriptor_is_the_describe_kernel_with_its_threshold() -> None:
    maps = np.random.default_rng(1).random((3, 20, 20), dtype=np.float32)
    comps = ("std", "top_mean", "cc_count", "cc_largest_area")
    desc = Descriptor.fit(maps, comps, 0.99)
    assert desc.threshold == pytest.approx(float(np.quantile(maps, 0.99)))
    assert desc.threshold == pixel_threshold(maps, 0.99)
    np.testing.assert_array_equal(
        desc(maps), kernels.describe(maps, comps, threshold=desc.threshold).astype(np.float64)
    )
    assert desc(maps).dtype == np.float64 and desc(maps).shape == (3, 4)


def test_resolve_components() -> None:
    assert resolve_components("paper") == PAPER_COMPONENTS == ("std", "top_mean", "tv")
    assert resolve_components("extended") == EXTENDED_COMPONENTS
    assert resolve_components(["tv", "q:0.995"]) == ("tv", "q:0.995")
    with pytest.raises(ValueError, match="unknown component 'nope'"):
        resolve_components(["nope"])
    with pytest.raises(ValueError, match="repeat"):
        resolve_components(["tv", "tv"])
    with pytest.raises(ValueError, match="at least one"):
        resolve_components([])
    with pytest.raises(ValueError, match="'paper', 'extended'"):
        resolve_components("papers")
    with pytest.raises(TypeError, match="must be str"):
        resolve_components([1])
    with pytest.raises(TypeError):
        resolve_components(3)


def test_pixel_threshold_rejects_bad_quantile() -> None:
    with pytest.raises(ValueError, match="quantile"):
        pixel_threshold(np.zeros((1, 2, 2), np.float32), 1.5)


# ------------------------------------------------------------------------------- cross-fit


def test_fold_parts_and_folds_agree() -> None:
    perm, parts = fold_parts(10, 3, 5)
    assert sorted(perm.tolist()) == list(range(10)) and len(parts) == 3
    folds = crossfit_folds(10, 3, 5)
    for i, part in enumerate(parts):
        assert np.all(folds[part] == i)
    with pytest.raises(ValueError, match="n_images"):
        crossfit_folds(2, 3, 0)


def test_crossfit_maps_never_score_an_image_with_its_own_bank() -> None:
    f = _feats(n=6, seed=4)
    seen: list[tuple[set[int], set[int]]] = []

    def build(held: np.ndarray) -> MemoryBank:
        rest = np.setdiff1d(np.arange(6), held)
        return MemoryBank(f[rest].reshape(-1, 8).copy())

    def score(x: np.ndarray, bank: MemoryBank) -> tuple[np.ndarray, np.ndarray]:
        rows = {tuple(v) for v in bank.vectors.tolist()}
        mine = {tuple(v) for v in x.reshape(-1, 8).tolist()}
        seen.append((rows, mine))
        s, _ = bank.search(x, 1)
        m = AnomalyMapper(8, 0.0)(s)
        return m, AnomalyMapper.max_scores(m)

    maps, smax = crossfit_maps(f, folds=3, seed=0, k=1, batch_size=1, build=build, score=score)
    assert maps.shape == (6, 8, 8) and smax.shape == (6,)
    assert all(not (rows & mine) for rows, mine in seen)
    assert np.all(smax > 0)  # nobody matched itself
    with pytest.raises(ValueError, match="cross-fit bank"):
        crossfit_maps(f, folds=3, seed=0, k=999, batch_size=2, build=build, score=score)


def test_crossfit_on_bank_gets_each_fold_bank_without_the_held_images() -> None:
    # calibration="synthetic" scores the defects of the held images with this bank
    f = _feats(n=6, seed=5)
    calls: list[tuple[np.ndarray, MemoryBank]] = []

    def build(held: np.ndarray) -> MemoryBank:
        rest = np.setdiff1d(np.arange(6), held)
        return MemoryBank(f[rest].reshape(-1, 8).copy())

    def score(x: np.ndarray, bank: MemoryBank) -> tuple[np.ndarray, np.ndarray]:
        s, _ = bank.search(x, 1)
        m = AnomalyMapper(8, 0.0)(s)
        return m, AnomalyMapper.max_scores(m)

    crossfit_maps(
        f,
        folds=3,
        seed=0,
        k=1,
        batch_size=2,
        build=build,
        score=score,
        on_bank=lambda held, bank: calls.append((held, bank)),
    )
    assert sorted(np.concatenate([h for h, _ in calls]).tolist()) == list(range(6))
    for held, bank in calls:
        rows = {tuple(v) for v in bank.vectors.tolist()}
        mine = {tuple(v) for v in f[held].reshape(-1, 8).tolist()}
        assert not (rows & mine)


# ------------------------------------------------------------------- composition = predict


def test_stages_compose_to_predict(fitted: Detector, train: np.ndarray) -> None:
    st = fitted.stages()
    pred = fitted.predict(train[:3])
    feats = fitted.features(train[:3])
    scores, _ = st.bank.search(feats, fitted.k)
    maps = st.mapper(scores)
    np.testing.assert_array_equal(maps, pred.maps)
    phi = st.descriptor(maps)
    np.testing.assert_array_equal(phi, pred.descriptor)
    _, _, score = st.calibrator.transform(phi, st.mapper.max_scores(maps))
    np.testing.assert_array_equal(score, pred.score)
    np.testing.assert_array_equal(st.calibrator.decide(score), pred.is_anomalous)
    assert st.bank.vectors is fitted.bank_  # a view of the fitted state, no copy


def test_stages_follow_runtime_knobs(fitted: Detector, train: np.ndarray) -> None:
    fitted.set_params(backend="reference", threads=1)
    try:
        st = fitted.stages()
        assert st.bank.backend == st.mapper.backend == st.descriptor.backend == "reference"
        assert st.bank.threads == 1
    finally:
        fitted.set_params(backend="cpp", threads=None)


def test_calibrator_stage_refits_from_stored_descriptors(fitted: Detector) -> None:
    mode = fitted.calibration
    cols = [fitted.stored_components_.index(c) for c in fitted.components_]
    cal = StructCalibrator(fitted.norm, fitted.lam, fitted.threshold_quantile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        cal.fit(fitted.train_phi_[mode][:, cols], fitted.train_max_[mode])
    np.testing.assert_array_equal(cal.mu_, fitted.mu_)
    assert cal.lambda_ == fitted.lambda_


def test_unfitted_detector_has_no_stages() -> None:
    from structcore.detector import NotFittedError

    with pytest.raises(NotFittedError):
        Detector(**SMALL).stages()


# ------------------------------------------------------------------------ plain state (io)


def test_state_round_trip_through_io(fitted: Detector, train: np.ndarray, tmp_path) -> None:
    path = tmp_path / "m.npz"
    fitted.save(path)
    state = read_state(path)
    assert isinstance(state, DetectorState)
    assert state.config == fitted.get_params() | {"device": "cpu"}
    np.testing.assert_array_equal(state.bank, fitted.bank_)
    assert state.components == fitted.components_ and state.n_train == 7
    # write_state of the read state gives the same bytes; from_state gives the same detector
    again = tmp_path / "again.npz"
    write_state(state, again)
    assert again.read_bytes() == path.read_bytes()
    det = Detector.from_state(state)
    np.testing.assert_array_equal(det.predict(train[:2]).score, fitted.predict(train[:2]).score)


def test_read_state_names_the_file_on_bad_content(tmp_path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"bad\.npz is not a valid structcore detector file"):
        read_state(bad)
    with pytest.raises(FileNotFoundError):
        read_state(tmp_path / "missing.npz")


# ------------------------------------------------------------- cross-fit banks: masked/coreset


def test_memory_bank_sources_and_without_images() -> None:
    f = _feats(n=5, seed=7)
    bank = MemoryBank.build(f, 0.3, projection_dim=None, seed=0)
    assert bank.sources is not None and bank.sources.shape == (len(bank),)
    for row, src in zip(bank.vectors, bank.sources, strict=True):
        assert (f[src].reshape(-1, 8) == row).all(axis=1).any()
    held = np.array([1, 3])
    rest = bank.without_images(held)
    assert not np.isin(rest.sources, held).any()
    assert len(rest) == int((~np.isin(bank.sources, held)).sum())
    np.testing.assert_array_equal(rest.vectors, bank.vectors[~np.isin(bank.sources, held)])
    with pytest.raises(ValueError, match="sources"):
        MemoryBank(bank.vectors).without_images(held)


def test_locate_rows_recovers_sources_and_refuses_foreign_banks() -> None:
    from structcore.crossfit import locate_rows

    f = _feats(n=5, seed=8)
    bank = MemoryBank.build(f, 0.3, projection_dim=None, seed=0)
    np.testing.assert_array_equal(locate_rows(bank.vectors, f), bank.sources)
    with pytest.raises(ValueError, match="crossfit_bank='coreset'"):
        locate_rows(bank.vectors + 1.0, f)


def test_masked_crossfit_fit(train: np.ndarray, tmp_path) -> None:
    det = Detector(**SMALL, crossfit_bank="masked").fit(train)
    feats = det.features(train)
    # the fitted cross-fit maps are what calibration_maps recomputes (sources found by match)
    _, cal_max = det.calibration_maps(feats, "crossfit")
    np.testing.assert_array_equal(cal_max, det.train_max_["crossfit"])
    # each held-out fold was scored by the final bank minus its own rows: never self-matched
    same_train = det.train_max_["train"]
    assert np.all(det.train_max_["crossfit"] >= same_train - 1e-6)
    # fit_features with the same bank gives the same fit; save/load keeps the setting
    again = Detector(**SMALL, crossfit_bank="masked").fit_features(feats, bank=det.bank_)
    np.testing.assert_array_equal(again.train_max_["crossfit"], det.train_max_["crossfit"])
    det.save(tmp_path / "m.npz")
    loaded = Detector.load(tmp_path / "m.npz")
    assert loaded.crossfit_bank == "masked"
    np.testing.assert_array_equal(loaded.calibration_maps(feats, "crossfit")[1], cal_max)


def test_crossfit_bank_is_validated() -> None:
    with pytest.raises(ValueError, match="crossfit_bank"):
        Detector(**SMALL, crossfit_bank="fresh").validate_params()
