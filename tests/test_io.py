"""Saving and loading detectors (structcore.io): .npz + JSON, no pickle, bit-identical."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch

from structcore import Detector
from structcore.detector import NotFittedError
from structcore.io import BASE_VERSION, FORMAT_NAME, seal_metadata

SMALL = dict(
    backbone="resnet18", weights=None, dim=32, resize=48, crop=48, folds=3, seed=0, lam="auto"
)


def _images(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(80, 170, size=(n, 48, 48, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def fitted() -> Detector:
    return Detector(**SMALL, descriptor="extended", reweight=True).fit(_images(8, 0))


@pytest.fixture
def saved(fitted: Detector, tmp_path):
    path = tmp_path / "model.structcore"  # the name is kept as given (no .npz appended)
    fitted.save(path)
    return path


def _rewrite(src, dst, *, meta_update=None, arrays_update=None, fix_checksum=False) -> None:
    with np.load(src, allow_pickle=False) as npz:
        contents = {k: npz[k] for k in npz.files}
    meta = json.loads(contents.pop("metadata").tobytes())
    contents.update(arrays_update or {})
    meta.update(meta_update or {})
    if fix_checksum:
        meta["arrays"] = {
            n: {"dtype": a.dtype.str, "shape": list(a.shape)} for n, a in contents.items()
        }
        payload = np.frombuffer(seal_metadata(meta, contents), dtype=np.uint8)
    else:
        payload = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(dst, "wb") as fh:
        np.savez(fh, metadata=payload, **contents)


def test_round_trip_is_bit_identical(fitted: Detector, saved) -> None:
    x = _images(4, 9)
    x[1, 10:20, 10:20] = 255
    loaded = Detector.load(saved)
    a, b = fitted.predict(x), loaded.predict(x)
    for name in ("maps", "score_max", "score_struct", "score", "descriptor", "z", "is_anomalous"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    va, vb = fitted.variant_scores(a.maps, a.score_max), loaded.variant_scores(b.maps, b.score_max)
    assert va.keys() == vb.keys()
    for key in va:
        np.testing.assert_array_equal(va[key], vb[key], err_msg=key)
    assert loaded.get_params() == fitted.get_params()
    assert loaded.lambda_ == fitted.lambda_
    assert loaded.decision_threshold_ == fitted.decision_threshold_
    assert loaded.pixel_thresholds_ == fitted.pixel_thresholds_


def test_file_layout_is_plain_npz(fitted: Detector, saved) -> None:
    with zipfile.ZipFile(saved) as zf:
        names = set(zf.namelist())
    assert {"metadata.npy", "bank.npy", "mu.npy", "sigma.npy"} <= names
    assert {"train_phi.crossfit.npy", "train_max.train.npy"} <= names
    with np.load(saved, allow_pickle=False) as npz:
        meta = json.loads(npz["metadata"].tobytes().decode("utf-8"))
        np.testing.assert_array_equal(npz["bank"], fitted.bank_)
    assert meta["format"] == FORMAT_NAME and meta["version"] == BASE_VERSION  # no weights
    assert meta["backbone"] == "resnet18" and meta["layers"] == ["layer2", "layer3"]
    assert meta["weights_sha256"] == fitted.extractor_.weights_sha256
    assert meta["config"]["descriptor"] == "extended" and meta["config"]["reweight"] is True
    assert meta["calibration"] == "train"  # the default (docs/ABLATION.md)
    assert meta["fitted"]["lambda"] == fitted.lambda_
    assert len(meta["checksum"]) == 64


def test_save_unfitted_and_missing(tmp_path) -> None:
    with pytest.raises(NotFittedError):
        Detector().save(tmp_path / "x.npz")
    with pytest.raises(FileNotFoundError):
        Detector.load(tmp_path / "absent.npz")


def test_truncated_file(saved, tmp_path) -> None:
    data = saved.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 30):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="not a valid structcore detector file"):
            Detector.load(bad)


def test_not_an_npz(tmp_path) -> None:
    bad = tmp_path / "junk.npz"
    bad.write_bytes(b"hello world" * 50)
    with pytest.raises(ValueError, match="not a valid structcore detector file"):
        Detector.load(bad)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.zeros(3))
    with pytest.raises(ValueError, match="no 'metadata'"):
        Detector.load(plain)


def _tampered_bank(saved, tmp_path):
    """(a copy of ``saved`` whose bank has one value changed, without fixing the checksum;
    that bank)."""
    with np.load(saved, allow_pickle=False) as npz:
        bank = npz["bank"].copy()
    bank[0, 0] += 1.0
    bad = tmp_path / "tampered.npz"
    _rewrite(saved, bad, arrays_update={"bank": bank})
    return bad, bank


def test_tampered_arrays(saved, tmp_path) -> None:
    bad, bank = _tampered_bank(saved, tmp_path)
    with pytest.raises(ValueError, match="checksum mismatch"):
        Detector.load(bad)
    # flipping one byte inside the stored (uncompressed) bank
    data = bytearray(saved.read_bytes())
    pos = data.find(np.ascontiguousarray(bank[1]).tobytes()[:16])
    assert pos > 0
    data[pos] ^= 0xFF
    flipped = tmp_path / "flipped.npz"
    flipped.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="not a valid structcore detector file"):
        Detector.load(flipped)


def test_wrong_version_and_format(saved, tmp_path) -> None:
    bad = tmp_path / "v99.npz"
    _rewrite(saved, bad, meta_update={"version": 99})
    with pytest.raises(ValueError, match="version 99 is not supported"):
        Detector.load(bad)
    _rewrite(saved, bad, meta_update={"format": "something.else"})
    with pytest.raises(ValueError, match="format"):
        Detector.load(bad)


def test_wrong_shapes(saved, tmp_path) -> None:
    bad = tmp_path / "shape.npz"
    _rewrite(saved, bad, arrays_update={"mu": np.zeros(2)}, fix_checksum=True)
    with pytest.raises(ValueError, match="inconsistent"):
        Detector.load(bad)
    _rewrite(saved, bad, arrays_update={"bank": np.zeros((5, 7), np.float32)}, fix_checksum=True)
    with pytest.raises(ValueError, match="bank"):
        Detector.load(bad)
    _rewrite(saved, bad, arrays_update={"extra": np.zeros(3)})  # undeclared entry
    with pytest.raises(ValueError, match="do not match"):
        Detector.load(bad)


def test_weights_must_match(fitted: Detector, saved, tmp_path) -> None:
    other = tmp_path / "other.pth"
    torch.manual_seed(123)
    import torchvision

    torch.save(torchvision.models.resnet18(weights=None).state_dict(), other)
    with pytest.raises(ValueError, match="differ from those the detector was fitted with"):
        Detector.load(saved, weights=str(other))
    same = tmp_path / "same.pth"
    with torch.random.fork_rng(devices=[]):  # the seeded random init the detector used
        torch.manual_seed(SMALL["seed"])
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), same)
    loaded = Detector.load(saved, weights=str(same))
    x = _images(2, 4)
    np.testing.assert_array_equal(loaded.predict(x).score, fitted.predict(x).score)


# ------------------------------------------------------------------ a bank in shared memory


def _shared_bank(path, tmp_path, name="bank.npy"):
    """The file's bank as a read-only memory map (what many processes can share)."""
    with np.load(path, allow_pickle=False) as npz:
        np.save(tmp_path / name, npz["bank"])
    return np.load(tmp_path / name, mmap_mode="r")


def test_load_with_shared_bank_uses_it_and_predicts_the_same(fitted: Detector, saved, tmp_path):
    shared = _shared_bank(saved, tmp_path)
    loaded = Detector.load(saved, shared_bank=shared)
    # no private copy: the detector's bank is (a view of) the shared memory
    assert np.shares_memory(loaded.bank_, shared) and loaded.bank_.shape == shared.shape
    x = _images(3, 4)
    a, b = fitted.predict(x), loaded.predict(x)
    for name in ("maps", "score_max", "score", "descriptor", "is_anomalous"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_shared_bank_with_a_deflated_file(fitted: Detector, saved, tmp_path) -> None:
    """Entries stored deflated are compared through the decompressing stream, block by block
    (the bank here spans several compare blocks)."""
    import structcore.io as sio

    deflated = tmp_path / "deflated.npz"
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    shared = _shared_bank(saved, tmp_path)
    block = sio._COMPARE_BLOCK
    try:
        sio._COMPARE_BLOCK = 512  # several blocks for this small bank
        loaded = Detector.load(deflated, shared_bank=shared)
        bad = np.array(shared)
        bad[-1, -1] += 1.0
        with pytest.raises(sio.SharedArrayMismatch):
            Detector.load(deflated, shared_bank=bad)
    finally:
        sio._COMPARE_BLOCK = block
    assert shared.nbytes > 4 * 512
    assert np.shares_memory(loaded.bank_, shared)
    x = _images(2, 5)
    np.testing.assert_array_equal(fitted.predict(x).score, loaded.predict(x).score)


def test_shared_bank_must_be_the_files_bank(saved, tmp_path) -> None:
    from structcore.io import SharedArrayMismatch, read_model_file

    shared = np.array(_shared_bank(saved, tmp_path))
    for bad in (shared[:-1].copy(), shared.astype(np.float64)):  # shape, dtype
        with pytest.raises(SharedArrayMismatch, match="shared array 'bank' has dtype"):
            Detector.load(saved, shared_bank=bad)
    last = shared.copy()
    last[-1, -1] = np.nextafter(last[-1, -1], np.float32(np.inf))  # one ulp, in the last block
    with pytest.raises(ValueError, match="values differ from the file's entry"):
        Detector.load(saved, shared_bank=last)
    with pytest.raises(TypeError, match="shared_bank must be a numpy array"):
        Detector.load(saved, shared_bank=shared.tolist())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="C-contiguous"):
        Detector.load(saved, shared_bank=np.asfortranarray(shared))
    with pytest.raises(SharedArrayMismatch, match="no such entry"):
        read_model_file(saved, shared={"metadata": np.zeros(3, np.uint8)})
    with pytest.raises(TypeError, match="shared must be a dict"):
        read_model_file(saved, shared=[shared])  # type: ignore[arg-type]


def test_shared_bank_does_not_skip_verification(saved, tmp_path) -> None:
    """A tampered file fails its checksum even when the caller supplies the tampered bank:
    the shared array is hashed as the entry it stands for."""
    bad, bank = _tampered_bank(saved, tmp_path)
    with pytest.raises(ValueError, match="checksum mismatch"):
        Detector.load(bad, shared_bank=bank)
