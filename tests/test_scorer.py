"""structcore::Scorer (C++ model reader + scoring) against Detector.predict, through the Python
binding (structcore.scorer.Scorer) and the C ABI (structcore.h, called with ctypes on the
symbols compiled into structcore._core); malformed model files must give clean errors."""

from __future__ import annotations

import ctypes
import io
import json
import struct
import threading
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from structcore import _core
from structcore.calibration import CalibrationWarning
from structcore.detector import Detector
from structcore.images import preprocess
from structcore.io import array_checksum, seal_metadata
from structcore.scorer import Scorer

# --------------------------------------------------------------------------------------------
# fixtures: small fitted detectors (random-weight ResNet-18, tiny crops) and their features

CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": {"lam": "auto"},
    "extended_linf_k3": {
        "descriptor": "extended",
        "norm": "linf",
        "k": 3,
        "lam": 0.05,
        "calibration": "train",
        "variants": False,
    },
    "reweight_quantiles": {
        "descriptor": ["std", "q95", "q:0.995", "cc_count", "tv", "orientation"],
        "reweight": True,
        "k": 2,
        "sigma": 0.0,
        "crop": 40,
        "resize": 48,
    },
    # the learned score max + a . z (weights in the file, format version 3)
    "synthetic": {
        "calibration": "synthetic",
        "descriptor": ["std", "top_mean", "tv", "q95", "cc_count"],
    },
}


def _images(seed: int, n: int, side: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(90, 150, size=(n, side, side, 3), dtype=np.uint8)
    base[n // 2 :, 10:20, 12:24] = 250  # a bright "defect" in half of them
    return base


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Detector, Path]]:
    out: dict[str, tuple[Detector, Path]] = {}
    folder = tmp_path_factory.mktemp("scorer")
    for name, extra in CONFIGS.items():
        params: dict[str, Any] = {
            "backbone": "resnet18",
            "weights": None,
            "dim": 48,
            "resize": 32,
            "crop": 32,
            "folds": 2,
            "coreset_ratio": 0.25,
        }
        params.update(extra)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalibrationWarning)  # a learned fit may fall back
            det = Detector(**params).fit(_images(0, 8))
        path = folder / f"{name}.npz"
        det.save(path)
        out[name] = (det, path)
    return out


def _features(det: Detector, images: np.ndarray) -> np.ndarray:
    return det.extractor_(preprocess(list(images), det.resize, det.crop))


Model = tuple[bytes, dict[str, Any], dict[str, np.ndarray]]

FIELDS = ("maps", "score_max", "score_struct", "score", "descriptor", "z", "is_anomalous")


def _assert_parity(pred: Any, got: Any) -> None:
    np.testing.assert_array_equal(got.maps, pred.maps)  # the same kernels
    for field in FIELDS[1:-1]:
        np.testing.assert_allclose(
            getattr(got, field), getattr(pred, field), rtol=1e-5, atol=1e-12, err_msg=field
        )
    np.testing.assert_array_equal(got.is_anomalous, pred.is_anomalous)


# --------------------------------------------------------------------------------------------
# parity with Detector.predict


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parity_with_predict(fitted: dict[str, tuple[Detector, Path]], name: str) -> None:
    det, path = fitted[name]
    images = _images(1, 6)
    pred = det.predict(images)
    scorer = Scorer(path)
    got = scorer.score_features(_features(det, images))
    _assert_parity(pred, got)
    assert got.is_anomalous.dtype == np.bool_
    assert np.ptp(pred.score) > 0 and np.ptp(pred.score_struct) > 0  # non-degenerate inputs


def test_info_matches_detector(fitted: dict[str, tuple[Detector, Path]]) -> None:
    det, path = fitted["reweight_quantiles"]
    info = Scorer(path).info
    assert info["components"] == list(det.components_)
    assert info["feature_grid"] == det.feature_grid_
    assert info["feature_dim"] == det.feature_dim_
    assert info["n_bank"] == det.bank_.shape[0]
    assert info["lambda"] == det.lambda_
    assert info["decision_threshold"] == det.decision_threshold_
    assert info["pixel_threshold"] == det.pixel_threshold_
    np.testing.assert_array_equal(info["mu"], det.mu_)
    np.testing.assert_array_equal(info["sigma_phi"], det.sigma_)
    assert info["reweight"] is True and info["k"] == 2 and info["crop"] == 40
    assert info["weights_sha256"] == det.weights_sha256_
    assert json.loads(info["metadata_json"])["format"] == "structcore.detector"
    assert info["weights"] == [] and info["format_version"] == 2


def test_synthetic_model_carries_its_weights(fitted: dict[str, tuple[Detector, Path]]) -> None:
    det, path = fitted["synthetic"]
    info = Scorer(path).info
    assert info["calibration"] == "synthetic" and info["format_version"] == 3
    assert info["weights"] == det.weights_.tolist() and info["lambda"] == 0.0
    assert np.any(det.weights_ != 0)  # the parity test exercises the learned term
    # score = max + sum_j a_j z_j, the same sum as Python's, bit for bit
    got = Scorer(path).score_features(_features(det, _images(5, 3)))
    want = np.zeros(len(got.score))
    for j in range(got.z.shape[1]):
        want = want + det.weights_[j] * got.z[:, j]
    np.testing.assert_array_equal(got.score, got.score_max + want)


def test_from_bytes_and_single_image(fitted: dict[str, tuple[Detector, Path]]) -> None:
    det, path = fitted["paper"]
    scorer = Scorer.from_bytes(path.read_bytes())
    feats = _features(det, _images(2, 2))
    one = scorer.score_features(feats[1])  # (h, w, dim): one image
    both = scorer.score_features(feats)
    assert one.maps.shape == (1, 32, 32)
    np.testing.assert_array_equal(one.score, both.score[1:])
    with pytest.raises(ValueError, match="empty"):
        scorer.score_features(feats[:0])
    raw = scorer._impl.score(np.ascontiguousarray(feats[:0]), 0)  # the core accepts B = 0
    assert raw["maps"].shape == (0, 32, 32) and raw["score"].shape == (0,)


def test_threads_and_concurrency(fitted: dict[str, tuple[Detector, Path]]) -> None:
    det, path = fitted["extended_linf_k3"]
    scorer = Scorer(path)
    feats = _features(det, _images(3, 5))
    ref = scorer.score_features(feats, threads=1)
    two = scorer.score_features(feats, threads=2)
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(two, field), getattr(ref, field))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: scorer.score_features(feats, threads=1), range(8)))
    for r in results:
        for field in FIELDS:
            np.testing.assert_array_equal(getattr(r, field), getattr(ref, field))


def test_feature_arguments(fitted: dict[str, tuple[Detector, Path]]) -> None:
    det, path = fitted["paper"]
    scorer = Scorer(path)
    feats = _features(det, _images(4, 2))
    ref = scorer.score_features(feats)
    got64 = scorer.score_features(feats.astype(np.float64))  # converted, same values
    np.testing.assert_array_equal(got64.score, ref.score)
    strided = np.ascontiguousarray(np.repeat(feats, 2, axis=3))[..., ::2]
    np.testing.assert_array_equal(scorer.score_features(strided).score, ref.score)
    with pytest.raises(ValueError, match=r"shape \(B, 4, 4, 48\)"):
        scorer.score_features(feats[:, :3])
    with pytest.raises(ValueError, match="shape"):
        scorer.score_features(feats[..., :10])
    bad = feats.copy()
    bad[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        scorer.score_features(bad)
    with pytest.raises(TypeError, match="floating"):
        scorer.score_features(feats.astype(np.int32))
    with pytest.raises(ValueError, match="dimensional"):
        scorer.score_features(feats[0, 0])
    with pytest.raises(ValueError, match="threads"):
        scorer.score_features(feats, threads=0)
    # the raw binding checks shapes and finiteness itself (no Python validation)
    with pytest.raises(ValueError, match="model expects"):
        scorer._impl.score(np.ascontiguousarray(feats[:, :, :3]), 0)
    with pytest.raises(ValueError, match="finite"):
        scorer._impl.score(bad, 0)


# --------------------------------------------------------------------------------------------
# malformed model files: the C++ reader must refuse them with a clear ValueError


def _raw(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with np.load(path) as z:
        arrays = {n: z[n] for n in z.files}
    meta = json.loads(arrays.pop("metadata").tobytes().decode())
    return meta, arrays


def _pack(
    meta: dict[str, Any],
    arrays: dict[str, np.ndarray],
    *,
    fix: bool = True,
    compressed: bool = False,
    text: str | None = None,
) -> bytes:
    if fix:
        meta = dict(meta)
        meta["arrays"] = {
            n: {"dtype": a.dtype.str, "shape": list(a.shape)} for n, a in arrays.items()
        }
        if meta.get("version") == 1:
            meta["checksum"] = array_checksum(arrays)
        elif text is None:
            text = seal_metadata(meta, arrays).decode()
    payload = np.frombuffer((text if text is not None else json.dumps(meta)).encode(), np.uint8)
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, metadata=payload, **arrays)
    return buf.getvalue()


def _load_error(data: bytes) -> str:
    with pytest.raises(ValueError) as exc:
        Scorer.from_bytes(data)
    return str(exc.value)


@pytest.fixture(scope="module")
def model(fitted: dict[str, tuple[Detector, Path]]) -> Model:
    _, path = fitted["paper"]
    meta, arrays = _raw(path)
    return path.read_bytes(), meta, arrays


def test_repacked_model_still_loads(model: Model) -> None:
    data, meta, arrays = model
    a = Scorer.from_bytes(data)
    b = Scorer.from_bytes(_pack(meta, arrays))
    assert a.info["mu"] == b.info["mu"]
    # Fortran-ordered arrays are read in C order (the checksum is over C-order bytes)
    arrays_f = dict(arrays, bank=np.asfortranarray(arrays["bank"]))
    c = Scorer.from_bytes(_pack(meta, arrays_f))
    feats = np.random.default_rng(0).standard_normal((2, 4, 4, 48)).astype(np.float32)
    np.testing.assert_array_equal(a.score_features(feats).score, c.score_features(feats).score)


@pytest.mark.parametrize("cut", [0, 1, 21, 22, 100, 2000, -200, -30, -1])
def test_truncated(model: Model, cut: int) -> None:
    data = model[0]
    msg = _load_error(data[:cut] if cut > 0 else data[: len(data) + cut] if cut < 0 else b"")
    assert "is not a valid" in msg


def test_not_a_zip_and_missing_file(tmp_path: Path) -> None:
    assert "ZIP signature" in _load_error(b"\x93NUMPY" + b"\0" * 100)
    assert "ZIP" in _load_error(b"PK\x03\x04" + b"\0" * 40)
    with pytest.raises(FileNotFoundError):
        Scorer(tmp_path / "absent.npz")
    with pytest.raises(OSError, match="cannot open"):
        _core.Scorer(str(tmp_path / "absent.npz"))
    with pytest.raises(TypeError):
        Scorer.from_bytes("not bytes")  # type: ignore[arg-type]


def test_compressed_entries(model: Model) -> None:
    _, meta, arrays = model
    msg = _load_error(_pack(meta, arrays, compressed=True))
    assert "compressed (method 8, deflate)" in msg and "savez_compressed" in msg


def test_crc_and_checksum(model: Model) -> None:
    data, meta, arrays = model
    # a flipped byte inside the bank data: the ZIP CRC-32 catches it
    i = data.index(b"bank.npy") + 200
    flipped = bytearray(data)
    flipped[i] ^= 0x40
    assert "CRC-32 mismatch" in _load_error(bytes(flipped))
    # modified arrays with a valid ZIP but the old checksum
    tampered = dict(arrays, bank=arrays["bank"] + np.float32(1))
    assert "checksum mismatch" in _load_error(_pack(dict(meta), tampered, fix=False))


def _edit(meta: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(meta))
    node = out
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[k]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return out


_DELETE = object()

META_CASES = [
    ("version", 4, "format version 4 is not supported"),
    ("version", "1", "format version not a number"),
    ("version", _DELETE, "format version missing"),
    ("format", "other.format", "format is 'other.format'"),
    ("fitted.lambda", _DELETE, "'fitted.lambda' is missing"),
    ("fitted.lambda", "0.1", "'fitted.lambda' must be a finite number"),
    ("fitted.decision_threshold", None, "must be a finite number"),
    ("config.k", 1000, "exceeds the"),
    ("config.k", 1.5, "'config.k' must be an integer"),
    ("config.k", 0, "'config.k' must be an integer"),
    ("config.sigma", -1.0, "'config.sigma' must be in [0, 1000]"),
    ("config.crop", 0, "'config.crop' must be an integer"),
    ("config.norm", "l3", "'config.norm' must be 'l2' or 'linf'"),
    ("config.reweight", 1, "'config.reweight' must be true or false"),
    ("config", [], "'config' is not an object"),
    ("components", ["std", "nonsense"], "unknown descriptor component 'nonsense'"),
    ("components", ["std", "q101"], "unknown descriptor component 'q101'"),
    ("components", ["std", "q0.5"], "unknown descriptor component 'q0.5'"),
    ("components", [], "'components' is empty"),
    ("components", "std", "must be a list of strings"),
    ("feature_dim", 7, "bank"),
    ("feature_grid", [4], "'feature_grid' must be [h, w]"),
    ("feature_grid", [0, 4], "'feature_grid' must hold two integers"),
    ("calibration_modes", ["crossfit"], "components/modes"),
    ("fitted.n_train", 3, "train arrays of mode"),
]


@pytest.mark.parametrize(("field", "value", "expected"), META_CASES)
def test_bad_metadata(model: Model, field: str, value: Any, expected: str) -> None:
    _, meta, arrays = model
    msg = _load_error(_pack(_edit(meta, field, value), arrays))
    assert expected in msg, msg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "not valid JSON"),
        ('{"a": 1, "a": 2}', 'duplicate key "a"'),
        ('{"a": NaN}', "NaN/Infinity"),
        ('{"a": 1e999}', "out of the range"),
        ('{"a": "\\ud800"}', "lone high surrogate"),
        ('{"a": "\x01"}', "control character"),
        ("[" * 100 + "]" * 100, "nesting deeper"),
        ('{"a": 01}', "leading zeros"),
        ("[1, 2] x", "unexpected content"),
        ("[]", "not a JSON object"),
        ('{"format": "structcore.detector", "version": 1}', "do not match the metadata's None"),
    ],
)
def test_bad_json(model: Model, text: str, expected: str) -> None:
    _, meta, arrays = model
    msg = _load_error(_pack(meta, arrays, fix=False, text=text))
    assert expected in msg, msg


def test_bad_arrays(model: Model) -> None:
    _, meta, arrays = model
    f = len(meta["components"])
    cases: list[tuple[dict[str, np.ndarray], str]] = [
        (dict(arrays, mu=arrays["mu"][:-1]), "mu/sigma"),
        (dict(arrays, sigma=np.zeros(f)), "sigma must be > 0"),
        (dict(arrays, mu=arrays["mu"].astype(np.float32)), "mu/sigma"),
        (dict(arrays, bank=arrays["bank"][:, :5]), "bank"),
        (dict(arrays, bank=arrays["bank"].astype(np.float64)), "bank"),
        (dict(arrays, bank=arrays["bank"][:0]), "bank"),
        (dict(arrays, bank=np.full_like(arrays["bank"], np.inf)), "NaN or Inf"),
        (dict(arrays, bank=arrays["bank"].astype(">f4")), "big-endian"),
        ({k: v for k, v in arrays.items() if k != "sigma"}, "mu/sigma"),
        (dict(arrays, bank=arrays["bank"].astype(np.complex64)), "unsupported dtype"),
    ]
    for arrs, expected in cases:
        msg = _load_error(_pack(meta, arrs))
        assert expected in msg, (expected, msg)
    # entries that the metadata does not declare / declared ones that are absent
    msg = _load_error(_pack(meta, dict(arrays, extra=np.zeros(3)), fix=False))
    assert "do not match the metadata's" in msg
    wrong_decl = json.loads(json.dumps(meta))
    wrong_decl["arrays"]["bank"]["shape"] = [1, 1]
    assert "does not declare" in _load_error(_pack(wrong_decl, arrays, fix=False))


@pytest.fixture(scope="module")
def syn_model(fitted: dict[str, tuple[Detector, Path]]) -> Model:
    _, path = fitted["synthetic"]
    meta, arrays = _raw(path)
    return path.read_bytes(), meta, arrays


def test_bad_weights(model: Model, syn_model: Model) -> None:
    _, meta, arrays = syn_model
    w = arrays["weights"]
    assert Scorer.from_bytes(_pack(meta, arrays)).info["weights"] == w.tolist()
    no_w = {k: v for k, v in arrays.items() if k != "weights"}
    cases: list[tuple[dict[str, Any], dict[str, np.ndarray], str]] = [
        (meta, no_w, "needs the 'weights' entry"),
        (meta, dict(arrays, weights=w[:-1]), "weights: dtype <f8 shape [4]"),
        (meta, dict(arrays, weights=w.astype(np.float32)), "weights: dtype <f4"),
        (meta, dict(arrays, weights=w.reshape(1, -1)), "weights"),
        (meta, dict(arrays, weights=np.full_like(w, np.nan)), "weights hold NaN or Inf"),
        (_edit(meta, "version", 2), arrays, "version 2 file (version 3 introduced it)"),
        (_edit(meta, "config.calibration", "crossfit"), arrays, "only 'synthetic'"),
    ]
    only_train = _edit(meta, "calibration_modes", ["train"])
    cases.append((only_train, arrays, "components/modes"))
    for m, a, expected in cases:
        msg = _load_error(_pack(m, a))
        assert expected in msg, (expected, msg)
    # a hybrid model with weights added (and the version raised) is refused too
    _, pmeta, parrays = model
    msg = _load_error(_pack(_edit(pmeta, "version", 3), dict(parrays, weights=np.zeros(3))))
    assert "only 'synthetic'" in msg


def _zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, content in entries.items():
            zf.writestr(name, content)
    return buf.getvalue()


def test_bad_npy_entries(model: Model) -> None:
    data = model[0]
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}

    def npy(header: str, payload: bytes = b"", version: bytes = b"\x01\x00") -> bytes:
        h = header.encode()
        ln = struct.pack("<H", len(h)) if version == b"\x01\x00" else struct.pack("<I", len(h))
        return b"\x93NUMPY" + version + ln + h + payload

    big = ", ".join(["99999999999"] * 3)
    cases = [
        ("mu.npy", b"", "only 0 bytes"),
        ("mu.npy", b"\x93NUMPX" + b"\0" * 20, "magic"),
        (
            "mu.npy",
            npy("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", version=b"\x04\x00"),
            "version 4.0",
        ),
        (
            "mu.npy",
            npy("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }"),
            "needs 24 data bytes",
        ),
        (
            "mu.npy",
            npy("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", b"\0" * 25),
            "trailing",
        ),
        ("mu.npy", npy("{'descr': '<f8', 'fortran_order': False, 'shape': (3,)"), "expected '}'"),
        ("mu.npy", npy("{'descr': '<f8', 'fortran_order': False}"), "must have the keys"),
        (
            "mu.npy",
            npy("{'descr': 'O', 'fortran_order': False, 'shape': (3,), }"),
            "unsupported dtype",
        ),
        (
            "mu.npy",
            npy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,), }"),
            "structured",
        ),
        (
            "mu.npy",
            npy(f"{{'descr': '<f8', 'fortran_order': False, 'shape': ({big}), }}"),
            "too large",
        ),
        (
            "mu.npy",
            npy("{'descr': '<f8', 'fortran_order': False, 'shape': (-3,), }"),
            "non-negative",
        ),
        ("mu.npy", b"\x93NUMPY\x01\x00\xff\xff{", "runs past the end"),
        ("notes.txt", b"hello", "not a .npy array"),
    ]
    for name, content, expected in cases:
        msg = _load_error(_zip_bytes(dict(entries, **{name: content})))
        assert expected in msg, (expected, msg)


def test_zip_structure_errors(model: Model) -> None:
    data = model[0]
    # a duplicated entry name
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        entries = [(n, zf.read(n)) for n in zf.namelist()]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        for n, c in [*entries, entries[1]]:
            zf.writestr(n, c)
    assert "appears twice" in _load_error(buf.getvalue())
    # central directory offset pointing past the end
    eocd = data.rindex(b"PK\x05\x06")
    broken = bytearray(data)
    broken[eocd + 16 : eocd + 20] = struct.pack("<I", len(data) + 10)
    assert "central directory" in _load_error(bytes(broken))
    # entry count larger than the directory can hold
    broken = bytearray(data)
    broken[eocd + 8 : eocd + 12] = struct.pack("<HH", 5000, 5000)
    assert "cannot fit" in _load_error(bytes(broken))
    # local header offset of the first entry moved
    cd = data.index(b"PK\x01\x02")
    broken = bytearray(data)
    broken[cd + 42 : cd + 46] = struct.pack("<I", 7)
    assert "local-header signature" in _load_error(bytes(broken))
    # encrypted flag
    broken = bytearray(data)
    broken[cd + 8] |= 1
    assert "encrypted" in _load_error(bytes(broken))


@given(st.lists(st.tuples(st.integers(0, 10**9), st.integers(1, 255)), min_size=1, max_size=4))
def test_fuzz_byte_flips(model: Model, flips: list[tuple[int, int]]) -> None:
    """Random byte changes: either a clean ValueError or a model that loads and scores."""
    data = bytearray(model[0])
    for pos, xor in flips:
        data[pos % len(data)] ^= xor
    try:
        s = Scorer.from_bytes(bytes(data))
    except ValueError as exc:
        assert "not a valid" in str(exc) or "not valid JSON" in str(exc)
        return
    feats = np.zeros((1, *s.feature_grid, s.feature_dim), np.float32)
    s.score_features(feats)


# --------------------------------------------------------------------------------------------
# the C ABI (structcore.h), through ctypes on the symbols compiled into structcore._core


@pytest.fixture(scope="module")
def capi() -> ctypes.CDLL:
    lib = ctypes.CDLL(_core.__file__)
    if not hasattr(lib, "structcore_scorer_create"):
        pytest.skip("this build of structcore._core does not export the C ABI symbols")
    p, i64, dbl = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
    lib.structcore_version.restype = ctypes.c_char_p
    lib.structcore_last_error.restype = ctypes.c_char_p
    lib.structcore_scorer_create.argtypes = [ctypes.c_char_p, ctypes.POINTER(p)]
    lib.structcore_scorer_create_from_memory.argtypes = [p, ctypes.c_size_t, ctypes.POINTER(p)]
    lib.structcore_scorer_destroy.argtypes = [p]
    lib.structcore_scorer_destroy.restype = None
    lib.structcore_scorer_input_shape.argtypes = [p, *[ctypes.POINTER(i64)] * 3]
    lib.structcore_scorer_output_shape.argtypes = [p, *[ctypes.POINTER(i64)] * 4]
    lib.structcore_scorer_thresholds.argtypes = [p, *[ctypes.POINTER(dbl)] * 3]
    lib.structcore_scorer_weights.argtypes = [p, p, i64, ctypes.POINTER(i64)]
    lib.structcore_scorer_metadata.argtypes = [
        p,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_size_t),
    ]
    lib.structcore_scorer_score.argtypes = [
        p,
        p,
        i64,
        i64,
        i64,
        i64,
        ctypes.c_int,
        p,
        p,
        p,
        p,
        p,
        p,
        p,
    ]
    return lib


def _ptr(a: np.ndarray | None) -> int | None:
    return None if a is None else a.ctypes.data


def _c_score(
    capi: ctypes.CDLL,
    handle: ctypes.c_void_p,
    feats: np.ndarray | None,
    shape: tuple[int, int, int, int],
    threads: int = 0,
    **outs: np.ndarray,
) -> int:
    """structcore_scorer_score with the named outputs (the others NULL)."""
    names = ("maps", "score_max", "score_struct", "score", "descriptor", "z", "is_anomalous")
    ptrs = [_ptr(outs.get(n)) for n in names]
    return int(capi.structcore_scorer_score(handle, _ptr(feats), *shape, threads, *ptrs))


def _shape_of(capi: ctypes.CDLL, handle: ctypes.c_void_p, fn: str, n: int) -> list[int]:
    vals = [ctypes.c_int64() for _ in range(n)]
    assert getattr(capi, fn)(handle, *[ctypes.byref(v) for v in vals]) == 0
    return [v.value for v in vals]


def test_c_abi_parity(capi: ctypes.CDLL, fitted: dict[str, tuple[Detector, Path]]) -> None:
    det, path = fitted["reweight_quantiles"]
    assert capi.structcore_abi_version() == _core.c_abi_version() == 2
    assert capi.structcore_version().decode() == _core.version()
    handle = ctypes.c_void_p()
    assert capi.structcore_scorer_create(str(path).encode(), ctypes.byref(handle)) == 0
    try:
        gh, gw, dim = _shape_of(capi, handle, "structcore_scorer_input_shape", 3)
        assert (gh, gw) == det.feature_grid_ and dim == det.feature_dim_
        hh, ww, nf, resize = _shape_of(capi, handle, "structcore_scorer_output_shape", 4)
        assert (hh, ww, nf, resize) == (40, 40, len(det.components_), 48)
        thr = ctypes.c_double()
        assert capi.structcore_scorer_thresholds(handle, ctypes.byref(thr), None, None) == 0
        assert thr.value == det.decision_threshold_
        n = ctypes.c_size_t()
        assert capi.structcore_scorer_metadata(handle, None, 0, ctypes.byref(n)) == -5
        assert b"buffer too small" in capi.structcore_last_error()
        buf = ctypes.create_string_buffer(n.value + 1)
        assert capi.structcore_scorer_metadata(handle, buf, n.value + 1, ctypes.byref(n)) == 0
        assert json.loads(buf.value.decode())["format"] == "structcore.detector"

        images = _images(5, 4)
        pred = det.predict(images)
        feats = np.ascontiguousarray(_features(det, images))
        b = feats.shape[0]
        shape = (b, gh, gw, dim)
        outs = {
            "maps": np.empty((b, 40, 40), np.float32),
            "score_max": np.empty(b),
            "score_struct": np.empty(b),
            "score": np.empty(b),
            "descriptor": np.empty((b, nf)),
            "z": np.empty((b, nf)),
            "is_anomalous": np.empty(b, np.uint8),
        }
        assert _c_score(capi, handle, feats, shape, **outs) == 0, capi.structcore_last_error()
        np.testing.assert_array_equal(outs["maps"], pred.maps)
        for name in ("score_max", "score_struct", "score", "descriptor", "z"):
            np.testing.assert_allclose(outs[name], getattr(pred, name), rtol=1e-5, atol=1e-12)
        np.testing.assert_array_equal(outs["is_anomalous"].astype(bool), pred.is_anomalous)
        only = np.empty(b)  # any output may be NULL
        assert _c_score(capi, handle, feats, shape, threads=1, score=only) == 0
        np.testing.assert_array_equal(only, outs["score"])
        # argument errors: wrong grid, Inf, NULL features, negative count
        assert _c_score(capi, handle, feats, (b, gh + 1, gw, dim), score=only) == -1
        assert b"model expects" in capi.structcore_last_error()
        bad = feats.copy()
        bad[0, 0, 0, 0] = np.inf
        assert _c_score(capi, handle, bad, shape, score=only) == -1
        assert b"finite" in capi.structcore_last_error()
        assert _c_score(capi, handle, None, shape) == -1
        assert b"features must not be NULL" in capi.structcore_last_error()
        assert _c_score(capi, handle, None, (-1, gh, gw, dim)) == -1
        assert _c_score(capi, handle, None, (0, gh, gw, dim)) == 0
        assert capi.structcore_last_error() == b""
    finally:
        capi.structcore_scorer_destroy(handle)
    capi.structcore_scorer_destroy(None)


def test_c_abi_weights(capi: ctypes.CDLL, fitted: dict[str, tuple[Detector, Path]]) -> None:
    for name, want in (("synthetic", fitted["synthetic"][0].weights_), ("paper", np.zeros(0))):
        handle = ctypes.c_void_p()
        path = fitted[name][1]
        assert capi.structcore_scorer_create(str(path).encode(), ctypes.byref(handle)) == 0
        try:
            n = ctypes.c_int64(-1)
            assert capi.structcore_scorer_weights(handle, None, 0, ctypes.byref(n)) == (
                -5 if want.size else 0
            )
            assert n.value == want.size
            buf = np.full(max(want.size, 1), np.nan)
            assert capi.structcore_scorer_weights(handle, _ptr(buf), buf.size, ctypes.byref(n)) == 0
            np.testing.assert_array_equal(buf[: want.size], want)
            assert capi.structcore_scorer_weights(handle, None, 0, None) == -1
            assert b"n_weights must not be NULL" in capi.structcore_last_error()
            assert capi.structcore_scorer_weights(handle, None, -1, ctypes.byref(n)) == -1
            assert capi.structcore_scorer_weights(None, None, 0, ctypes.byref(n)) == -1
            thr, lam = ctypes.c_double(), ctypes.c_double()
            assert (
                capi.structcore_scorer_thresholds(
                    handle, ctypes.byref(thr), None, ctypes.byref(lam)
                )
                == 0
            )
            assert thr.value == fitted[name][0].decision_threshold_
            assert lam.value == fitted[name][0].lambda_
        finally:
            capi.structcore_scorer_destroy(handle)


def test_c_abi_errors(capi: ctypes.CDLL, model: Model, tmp_path: Path) -> None:
    data, meta, arrays = model
    handle = ctypes.c_void_p(123)

    def from_memory(b: bytes) -> int:
        return int(capi.structcore_scorer_create_from_memory(b, len(b), ctypes.byref(handle)))

    assert from_memory(data[:-1]) == -2 and handle.value is None
    assert b"end-of-central-directory" in capi.structcore_last_error()
    assert from_memory(_pack(meta, arrays, compressed=True)) == -2
    assert b"compressed" in capi.structcore_last_error()
    assert from_memory(_pack(_edit(meta, "version", 7), arrays)) == -2
    assert b"format version 7" in capi.structcore_last_error()
    assert from_memory(_pack(meta, dict(arrays, mu=arrays["mu"][:1]))) == -2
    assert b"mu/sigma" in capi.structcore_last_error()
    assert capi.structcore_scorer_create_from_memory(None, 0, ctypes.byref(handle)) == -2
    assert capi.structcore_scorer_create_from_memory(None, 5, ctypes.byref(handle)) == -1
    absent = str(tmp_path / "absent.npz").encode()
    assert capi.structcore_scorer_create(absent, ctypes.byref(handle)) == -3
    assert b"cannot open" in capi.structcore_last_error()
    assert capi.structcore_scorer_create(None, ctypes.byref(handle)) == -1
    assert capi.structcore_scorer_create(b"x", None) == -1
    assert b"out must not be NULL" in capi.structcore_last_error()
    assert capi.structcore_scorer_input_shape(None, None, None, None) == -1
    # the message is per thread
    seen: list[bytes] = []
    t = threading.Thread(target=lambda: seen.append(capi.structcore_last_error()))
    t.start()
    t.join()
    assert seen == [b""]
    assert b"scorer must not be NULL" in capi.structcore_last_error()
    assert from_memory(data) == 0 and handle.value
    capi.structcore_scorer_destroy(handle)


def test_non_utf8_entry_name_gives_a_clean_error(model: Model) -> None:
    """Regression (CI hypothesis run): a byte flip inside a ZIP entry name put raw non-UTF-8
    bytes into the C++ message, which Python could not decode (UnicodeDecodeError)."""
    data = bytearray(model[0])
    at = bytes(data).rindex(b"bank.npy")  # the central-directory copy of the name
    data[at] = 0x81
    msg = _load_error(bytes(data))
    assert "not a valid" in msg and "\\x81" in msg
