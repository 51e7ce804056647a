"""Bad images in a batch: per-image errors, the rest still scored; size guards; concurrency."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from structcore import Detector
from structcore import images as images_mod
from structcore.images import load_image, preprocess, preprocess_one, transform_mask

SMALL = dict(backbone="resnet18", weights=None, dim=16, resize=32, crop=32, folds=2, seed=0)


def _rgb(n: int, seed: int, size: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(90, 160, size=(n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def det() -> Detector:
    return Detector(**SMALL, batch_size=3).fit(_rgb(4, 0))


@pytest.fixture(scope="module")
def good() -> np.ndarray:
    x = _rgb(5, 1)
    x[2, 5:15, 5:15] = 255
    return x


def _bad_files(tmp: Path, good: np.ndarray) -> dict[str, object]:
    """One entry per kind of bad input; values are what predict receives."""
    png = tmp / "ok.png"
    Image.fromarray(good[0]).save(png)
    data = png.read_bytes()
    truncated = tmp / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    jpg = tmp / "ok.jpg"
    Image.fromarray(good[1]).save(jpg, quality=90)
    jdata = jpg.read_bytes()
    truncated_jpg = tmp / "truncated.jpg"
    truncated_jpg.write_bytes(jdata[: len(jdata) // 3])
    junk = tmp / "junk.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    empty = tmp / "empty.png"
    empty.write_bytes(b"")
    text = tmp / "notes.png"
    text.write_text("not an image")
    return {
        "missing": tmp / "does_not_exist.png",
        "truncated_png": truncated,
        "truncated_jpg": truncated_jpg,
        "junk": junk,
        "empty_file": empty,
        "text": text,
        "directory": tmp,
        "nan_array": np.full((20, 20, 3), np.nan, np.float32),
        "out_of_range_float": np.full((20, 20, 3), 3.0, np.float32),
        "int32_array": np.zeros((20, 20, 3), np.int32),
        "bool_array": np.zeros((20, 20), bool),
        "two_channels": np.zeros((20, 20, 2), np.uint8),
        "empty_array": np.zeros((0, 20, 3), np.uint8),
        "rank_5": np.zeros((1, 2, 3, 4, 5), np.uint8),
        "a_string_of_a_number": 42,
        "extreme_aspect": np.zeros((1, 400_000), np.uint8),
    }


def test_every_bad_kind_fails_alone_with_a_clear_error(
    det: Detector, good: np.ndarray, tmp_path: Path
) -> None:
    bad = _bad_files(tmp_path, good)
    ref = det.predict(good)
    for kind, item in bad.items():
        batch: list[object] = [good[0], good[1], item, good[2], good[3], good[4]]
        with pytest.raises((FileNotFoundError, ValueError, TypeError)) as info:
            det.predict(batch)
        assert "images[2]" in str(info.value) or str(item) in str(info.value), kind
        pred = det.predict(batch, errors="skip")
        assert pred.valid.tolist() == [True, True, False, True, True, True], kind
        assert list(pred.errors) == [2], kind
        assert pred.n_failed == 1
        assert np.isnan(pred.score[2]) and np.isnan(pred.maps[2]).all()
        assert np.isnan(pred.descriptor[2]).all() and not pred.is_anomalous[2]
        keep = [0, 1, 3, 4, 5]
        # the backbone's batches differ ([0, 1] + [3, 4, 5] vs [0, 1, 2] + [3, 4]): equal up
        # to its batch-size-dependent rounding
        np.testing.assert_allclose(pred.score[keep], ref.score, rtol=1e-5, err_msg=kind)
        np.testing.assert_allclose(pred.maps[keep], ref.maps, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(pred.is_anomalous[keep], ref.is_anomalous)


def test_all_bad_and_mixed_batches(det: Detector, good: np.ndarray, tmp_path: Path) -> None:
    bad = _bad_files(tmp_path, good)
    items = list(bad.values())
    pred = det.predict(items, errors="skip")
    assert not pred.valid.any() and sorted(pred.errors) == list(range(len(items)))
    assert np.isnan(pred.score).all() and not pred.is_anomalous.any()
    for msg in pred.errors.values():
        assert msg.split(":")[0] in ("FileNotFoundError", "ValueError", "TypeError"), msg
    # interleaved, across batch boundaries (batch_size 3): every good image is scored
    mixed: list[object] = []
    for i in range(5):
        mixed += [good[i], items[i]]
    pred = det.predict(mixed, errors="skip", batch_size=3)
    assert pred.valid.tolist() == [True, False] * 5
    # same images, different batch composition: equal up to the backbone's rounding
    np.testing.assert_allclose(pred.score[::2], det.predict(good).score, rtol=1e-5)
    assert pred.timings["preprocess"] >= 0


def test_predict_default_is_unchanged(det: Detector, good: np.ndarray) -> None:
    a = det.predict(good)
    assert a.valid.all() and a.errors == {} and a.n_failed == 0
    b = det.predict(good, errors="skip")
    for name in ("maps", "score", "score_max", "descriptor", "z", "is_anomalous"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    with pytest.raises(ValueError, match="errors must be one of"):
        det.predict(good, errors="ignore")
    with pytest.raises(ValueError, match="at least one image"):
        det.predict([], errors="skip")


def test_documented_conversions_are_scored(det: Detector, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    gray16 = rng.integers(0, 65535, size=(30, 30), dtype=np.uint16)
    p16 = tmp_path / "gray16.png"
    Image.fromarray(gray16).save(p16)
    rgba = tmp_path / "rgba.png"
    Image.fromarray(rng.integers(0, 255, (30, 30, 4), dtype=np.uint8), "RGBA").save(rgba)
    gray8 = tmp_path / "gray8.png"
    Image.fromarray(rng.integers(0, 255, (30, 30), dtype=np.uint8), "L").save(gray8)
    pal = tmp_path / "palette.png"
    Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).convert("P").save(pal)
    tiny = np.full((1, 1, 3), 128, np.uint8)
    cmyk = Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).convert("CMYK")
    items: list[object] = [p16, rgba, gray8, pal, tiny, cmyk, gray16, np.zeros((30, 30, 1))]
    pred = det.predict(items, errors="skip")
    assert pred.valid.all(), pred.errors
    assert np.isfinite(pred.score).all()
    assert load_image(p16).dtype == np.float32
    np.testing.assert_allclose(load_image(p16)[..., 0], gray16 / 65535.0, rtol=1e-6)


def test_decompression_bomb_refused_before_decoding(tmp_path: Path, monkeypatch) -> None:
    big = tmp_path / "big.png"
    Image.new("L", (400, 300)).save(big)
    monkeypatch.setattr(images_mod, "MAX_IMAGE_PIXELS", 400 * 300 - 1)
    with pytest.raises(ValueError, match=r"MAX_IMAGE_PIXELS = 119999"):
        load_image(big)
    with pytest.raises(ValueError, match="MAX_IMAGE_PIXELS"):
        transform_mask(big, 32, 32)
    with pytest.raises(ValueError, match="MAX_IMAGE_PIXELS"):
        preprocess_one(np.zeros((300, 400), np.uint8), 32, 32)
    monkeypatch.setattr(images_mod, "MAX_IMAGE_PIXELS", 400 * 300)
    assert load_image(big).shape == (300, 400, 3)


def test_pillow_bomb_limit_is_a_value_error(tmp_path: Path, monkeypatch) -> None:
    # A header that claims more than twice Pillow's limit: Pillow refuses it in open().
    big = tmp_path / "bomb.png"
    Image.new("1", (2000, 2000)).save(big)  # a few hundred bytes on disk
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError, match="decompression bomb"):
        load_image(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3_000_000)  # warning zone (> limit)
    monkeypatch.setattr(images_mod, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError, match="MAX_IMAGE_PIXELS"):
        load_image(big)


def test_extreme_aspect_ratio_refused() -> None:
    strip = np.zeros((1, 400_000), np.uint8)
    with pytest.raises(ValueError, match="aspect ratio too extreme"):
        preprocess([strip], 256, 224)
    with pytest.raises(ValueError, match="aspect ratio too extreme"):
        transform_mask(strip, 256, 224)
    # a tall thin image that stays under the limit is fine
    assert tuple(preprocess([np.zeros((2, 300), np.uint8)], 32, 32).shape) == (1, 3, 32, 32)


def test_predict_from_8_threads_matches_sequential(det: Detector) -> None:
    batches = [_rgb(3, 100 + i) for i in range(8)]
    seq = [det.predict(b) for b in batches]
    barrier = threading.Barrier(8)

    def run(i: int):
        barrier.wait()
        return det.predict(batches[i])

    with ThreadPoolExecutor(8) as pool:
        par = list(pool.map(run, range(8)))
    for a, b in zip(seq, par, strict=True):
        for name in ("maps", "score", "score_max", "descriptor", "z", "is_anomalous"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
