"""Hostile and damaged model files: one clear ValueError, never code execution or a crash."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import structcore
from structcore import Detector
from structcore import io as sio
from structcore.calibration import CalibrationWarning
from structcore.io import array_checksum, read_model_file, seal_metadata

SMALL = dict(backbone="resnet18", weights=None, dim=8, resize=32, crop=32, folds=2, seed=0)
PACKAGE = Path(structcore.__file__).resolve().parent
BAD = "not a valid structcore detector file"


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory) -> bytes:
    rng = np.random.default_rng(0)
    det = Detector(**SMALL).fit(rng.integers(90, 160, size=(4, 36, 36, 3), dtype=np.uint8))
    path = tmp_path_factory.mktemp("model") / "m.npz"
    det.save(path)
    return path.read_bytes()


def _entries(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    return read_model_file(data)


def _archive(entries: dict[str, bytes], *, compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, blob in entries.items():
            zf.writestr(name, blob)
    return buf.getvalue()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=True)
    return buf.getvalue()


def _pack(meta: dict, arrays: dict[str, np.ndarray], *, fix: bool = True) -> bytes:
    meta = dict(meta)
    if fix:
        meta["arrays"] = {
            n: {"dtype": a.dtype.str, "shape": list(a.shape)} for n, a in arrays.items()
        }
        blob = np.frombuffer(seal_metadata(meta, arrays), np.uint8)
    else:
        blob = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    return _archive(
        {"metadata.npy": _npy(blob), **{f"{n}.npy": _npy(a) for n, a in arrays.items()}}
    )


def _load(data: bytes, tmp_path: Path) -> Detector:
    p = tmp_path / "m.npz"
    p.write_bytes(data)
    return Detector.load(p)


def _expect_bad(data: bytes, match: str = BAD) -> ValueError:
    with pytest.raises(ValueError, match=match) as info:
        read_model_file(data)
    assert type(info.value) is ValueError
    assert BAD in str(info.value)
    return info.value


# --------------------------------------------------------------------------------------------
# no code execution


def test_package_never_unpickles() -> None:
    sources = {p: p.read_text() for p in PACKAGE.rglob("*.py")}
    for path, text in sources.items():
        assert "allow_pickle=True" not in text, path
        assert not re.search(r"^\s*import pickle|^\s*from pickle", text, re.M), path
        for call in re.findall(r"torch\.load\([^)]*\)", text, re.S):
            assert "weights_only=True" in call, (path, call)
        assert "torch.hub.load(" not in text, path
        assert not re.search(r"(?<![.\w])(eval|exec)\(", text), path


class _Payload:
    """Unpickling this would create a marker file."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_object_array_is_refused_and_not_executed(
    model_bytes: bytes, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    _Payload.marker = str(marker)
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload()
    meta, arrays = _entries(model_bytes)
    blob = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    entries = {"metadata.npy": _npy(blob), **{f"{n}.npy": _npy(a) for n, a in arrays.items()}}
    for target in ("bank.npy", "metadata.npy", "extra.npy"):
        bad = dict(entries)
        bad[target] = _npy(evil)
        data = _archive(bad)
        _expect_bad(data, "dtype|O|unexpected")
        with pytest.raises(ValueError, match=BAD):
            _load(data, tmp_path)
    # the whole file a pickle
    _expect_bad(pickle.dumps(_Payload()))
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# damage


def test_every_truncation_is_one_value_error(model_bytes: bytes) -> None:
    n = len(model_bytes)
    cuts = sorted(
        {*range(0, 200, 7), *range(n - 400, n, 13), *np.linspace(0, n - 1, 60).astype(int)}
    )
    for cut in cuts:
        _expect_bad(model_bytes[:cut])


def test_byte_flips_are_detected_or_harmless(model_bytes: bytes) -> None:
    meta0, arrays0 = _entries(model_bytes)
    rng = np.random.default_rng(1)
    positions = rng.choice(len(model_bytes), size=300, replace=False)
    harmless = 0
    for pos in positions:
        data = bytearray(model_bytes)
        data[pos] ^= 1 << int(rng.integers(8))
        try:
            meta, arrays = read_model_file(bytes(data))
        except ValueError as exc:
            assert type(exc) is ValueError and BAD in str(exc)
            continue
        # ZIP fields nobody reads (timestamps, "version made by") may change: same payload
        harmless += 1
        assert meta == meta0 and arrays.keys() == arrays0.keys()
        for k in arrays:
            np.testing.assert_array_equal(arrays[k], arrays0[k])
    assert harmless < len(positions) // 3


def test_metadata_tampering_is_caught_by_the_checksum(model_bytes: bytes) -> None:
    meta, arrays = _entries(model_bytes)
    meta["fitted"]["decision_threshold"] *= 1.5
    _expect_bad(_pack(meta, arrays, fix=False), "checksum mismatch")
    meta, arrays = _entries(model_bytes)
    meta["config"]["k"] = 2
    _expect_bad(_pack(meta, arrays, fix=False), "checksum mismatch")


def test_version_1_files_are_read(model_bytes: bytes, tmp_path: Path) -> None:
    meta, arrays = _entries(model_bytes)
    meta["version"] = 1
    meta["checksum"] = array_checksum(arrays)
    data = _pack(meta, arrays, fix=False)
    got, _ = read_model_file(data)
    assert got["version"] == 1
    meta["fitted"]["lambda"] = 0.5  # version 1 did not cover the metadata
    read_model_file(_pack(meta, arrays, fix=False))
    for v in (0, 4, "2", 2.0, None, True):
        meta["version"] = v
        _expect_bad(_pack(meta, arrays), "version")


def _only_crossfit_fitted(meta: dict, arrays: dict) -> None:
    meta["config"]["calibration"] = "train"
    meta["calibration_modes"] = ["crossfit"]
    meta["fitted"]["pixel_thresholds"].pop("train")
    arrays.pop("train_phi.train")
    arrays.pop("train_max.train")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda m, a: m.update(config=[]), "config must be"),
        (lambda m, a: m.update(layers="layer2"), "layers must be"),
        (lambda m, a: m.update(layers=[]), "layers must not be empty"),
        (lambda m, a: m.update(components=[1, 2]), "components must be"),
        (lambda m, a: m.update(calibration_modes=["crossfit", "evil"]), "calibration_modes"),
        (lambda m, a: m.update(feature_grid=[4]), "feature_grid"),
        (lambda m, a: m.update(feature_dim=-3), "feature_dim"),
        (lambda m, a: m.update(feature_dim=True), "feature_dim"),
        (lambda m, a: m.update(weights_sha256=None), "weights_sha256"),
        (lambda m, a: m["fitted"].update(n_train="8"), "n_train"),
        (lambda m, a: m["fitted"].update(n_train=10**30), "train arrays"),
        (lambda m, a: m["fitted"].update({"lambda": -1.0}), "lambda"),
        (lambda m, a: m["fitted"].update(decision_threshold="0.5"), "decision_threshold"),
        (lambda m, a: m["fitted"].update(pixel_thresholds={}), "pixel_thresholds"),
        (lambda m, a: m["config"].update(k=10**9), "exceeds the bank"),
        (lambda m, a: m["config"].update(k="1"), "config is invalid"),
        (lambda m, a: m["config"].update(crop=10**9), "config is invalid"),
        (lambda m, a: m["config"].update(evil="x"), "unknown parameters"),
        (lambda m, a: m["config"].update(weights={"a": 1}), "weights"),
        (_only_crossfit_fitted, "was not fitted"),
        (lambda m, a: m["config"].update(descriptor=["max"]), "components disagree"),
        (lambda m, a: a.update(bank=np.full((3, 8), np.nan, np.float32)), "NaN"),
        (lambda m, a: a.update(bank=np.zeros((0, 8), np.float32)), "empty"),
        (lambda m, a: a.update(bank=np.zeros((3, 8), np.float64)), "bank"),
        (lambda m, a: a.update(sigma=np.zeros_like(a["sigma"])), "sigma"),
        (lambda m, a: a.update(mu=a["mu"][:1]), "mu/sigma"),
        (lambda m, a: a.pop("train_max.train"), "train arrays"),
        (
            lambda m, a: a.update(
                {"train_phi.crossfit": np.full_like(a["train_phi.crossfit"], np.inf)}
            ),
            "NaN or Inf",
        ),
    ],
)
def test_inconsistent_files_with_valid_checksums(
    model_bytes: bytes, tmp_path: Path, change, match: str
) -> None:
    meta, arrays = _entries(model_bytes)
    change(meta, arrays)
    data = _pack(meta, arrays)
    with pytest.raises(ValueError, match=match) as info:
        _load(data, tmp_path)
    assert type(info.value) is ValueError and BAD in str(info.value)


@pytest.fixture(scope="module")
def synthetic_bytes(tmp_path_factory) -> bytes:
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)  # a tiny learned fit may fall back
        det = Detector(**SMALL, calibration="synthetic").fit(
            rng.integers(90, 160, size=(4, 36, 36, 3), dtype=np.uint8)
        )
    path = tmp_path_factory.mktemp("synthetic") / "m.npz"
    det.save(path)
    return path.read_bytes()


def _drop_weights(m: dict, a: dict) -> None:
    a.pop("weights")


def _synthetic_without_crossfit(m: dict, a: dict) -> None:
    m["calibration_modes"] = ["train"]
    m["fitted"]["pixel_thresholds"].pop("crossfit")
    a.pop("train_phi.crossfit")
    a.pop("train_max.crossfit")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (_drop_weights, "needs the 'weights' entry"),
        (lambda m, a: a.update(weights=a["weights"][:-1]), "weights: dtype <f8 shape"),
        (lambda m, a: a.update(weights=a["weights"].astype(np.float32)), "weights: dtype <f4"),
        (lambda m, a: a.update(weights=np.full_like(a["weights"], np.inf)), "NaN or Inf"),
        (lambda m, a: m.update(version=2), "version 3 introduced it"),
        (lambda m, a: m.update(calibration="train"), "only 'synthetic'"),
        (_synthetic_without_crossfit, "needs the crossfit calibration arrays"),
        # config and metadata disagree: the detector's own check
        (lambda m, a: m["config"].update(calibration="train"), "weights must be stored"),
    ],
)
def test_bad_weights_entries(synthetic_bytes: bytes, tmp_path: Path, change, match: str) -> None:
    meta, arrays = _entries(synthetic_bytes)
    assert meta["version"] == 3 and arrays["weights"].shape == (3,)
    _load(_pack(meta, arrays), tmp_path)  # the repacked file loads
    change(meta, arrays)
    with pytest.raises(ValueError, match=match) as info:
        _load(_pack(meta, arrays), tmp_path)
    assert type(info.value) is ValueError and BAD in str(info.value)


def test_weights_in_a_hybrid_model_are_refused(model_bytes: bytes, tmp_path: Path) -> None:
    meta, arrays = _entries(model_bytes)
    meta["version"] = 3  # a version 3 file without weights is valid
    _load(_pack(meta, arrays), tmp_path)
    arrays["weights"] = np.zeros(len(meta["components"]))
    with pytest.raises(ValueError, match="only 'synthetic'"):
        _load(_pack(meta, arrays), tmp_path)


def test_json_attacks(model_bytes: bytes) -> None:
    meta, arrays = _entries(model_bytes)
    deep = "[" * 100_000 + "]" * 100_000
    for text in (deep, "not json", '{"format": NaN}', "\xff\xfe", "[]", "null", '"x"'):
        raw = text.encode("utf-8", "surrogateescape") if text != "\xff\xfe" else b"\xff\xfe"
        blob = np.frombuffer(raw, np.uint8)
        data = _archive(
            {"metadata.npy": _npy(blob), **{f"{n}.npy": _npy(a) for n, a in arrays.items()}}
        )
        _expect_bad(data)
    # NaN / Infinity constants anywhere in the JSON (Python's json would accept them)
    text = json.dumps(meta).replace('"lambda": ', '"lambda": NaN, "x": ', 1)
    blob = np.frombuffer(text.encode(), np.uint8)
    data = _archive(
        {"metadata.npy": _npy(blob), **{f"{n}.npy": _npy(a) for n, a in arrays.items()}}
    )
    _expect_bad(data, "non-finite")


def test_size_guards_refuse_before_allocating(model_bytes: bytes, monkeypatch) -> None:
    meta, arrays = _entries(model_bytes)
    blob = _npy(np.frombuffer(json.dumps(meta).encode(), np.uint8))
    base = {"metadata.npy": blob, **{f"{n}.npy": _npy(a) for n, a in arrays.items()}}
    # a header that claims 10**12 float64 (8 TB) in a tiny entry
    hdr = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        hdr, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)}
    )
    _expect_bad(_archive({**base, "bank.npy": hdr.getvalue() + b"\0" * 64}), "above the limit")
    # a header that disagrees with the entry size (truncated data)
    bank = base["bank.npy"]
    _expect_bad(_archive({**base, "bank.npy": bank[:-8]}), "truncated or corrupted")
    _expect_bad(_archive({**base, "bank.npy": bank + b"\0" * 8}), "truncated or corrupted")
    # a deflate "zip bomb": small on disk, large once inflated
    monkeypatch.setattr(sio, "MAX_FILE_BYTES", 1 << 20)
    bomb = _npy(np.zeros(1 << 19, np.float32))  # 2 MiB of zeros
    data = _archive({**base, "bank.npy": bomb}, compression=zipfile.ZIP_DEFLATED)
    assert len(data) < 100_000
    _expect_bad(data, "above the limit MAX_FILE_BYTES")
    monkeypatch.setattr(sio, "MAX_FILE_BYTES", 2**33)
    monkeypatch.setattr(sio, "MAX_ENTRIES", 3)
    _expect_bad(model_bytes, "MAX_ENTRIES")


def test_archive_structure_attacks(model_bytes: bytes) -> None:
    meta, arrays = _entries(model_bytes)
    blob = _npy(np.frombuffer(json.dumps(meta).encode(), np.uint8))
    base = {"metadata.npy": blob, **{f"{n}.npy": _npy(a) for n, a in arrays.items()}}
    _expect_bad(_archive({**base, "../../etc/x.npy": b""}), "unexpected archive entry")
    _expect_bad(_archive({**base, "readme.txt": b"hi"}), "unexpected archive entry")
    _expect_bad(_archive({k: v for k, v in base.items() if k != "metadata.npy"}), "no 'metadata'")
    big_endian = _npy(arrays["bank"].astype(">f4"))
    _expect_bad(_archive({**base, "bank.npy": big_endian}), "dtype")
    fortran = _npy(np.asfortranarray(arrays["train_phi.crossfit"]))
    _expect_bad(_archive({**base, "train_phi.crossfit.npy": fortran}), "Fortran")
    # duplicate names (zipfile warns when writing them)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, pytest.warns(UserWarning, match="Duplicate"):
        for name, b in base.items():
            zf.writestr(name, b)
        zf.writestr("bank.npy", base["bank.npy"])
    _expect_bad(buf.getvalue(), "duplicate")
    # deflate-compressed but otherwise valid archives are fine (np.savez_compressed)
    read_model_file(_archive(base, compression=zipfile.ZIP_DEFLATED))
    # an empty file, a directory, a missing file
    _expect_bad(b"")


def test_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Detector.load(tmp_path / "absent.npz")
    with pytest.raises(FileNotFoundError):
        Detector.load(tmp_path)
    fifo = tmp_path / "empty.npz"
    fifo.write_bytes(b"")
    with pytest.raises(ValueError, match=BAD):
        Detector.load(fifo)
    assert os.path.exists(fifo)
