"""Image loading, conversion and preprocessing (structcore.images)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from structcore.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    as_image_list,
    iter_batches,
    load_image,
    preprocess,
    to_float_rgb,
    transform_mask,
)


@pytest.fixture
def rgb8() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(20, 30, 3), dtype=np.uint8)


def test_uint8_rgb_array(rgb8: np.ndarray) -> None:
    out = to_float_rgb(rgb8)
    assert out.dtype == np.float32 and out.shape == (20, 30, 3)
    np.testing.assert_array_equal(out, rgb8.astype(np.float32) / 255)


def test_gray_and_rgba_and_single_channel(rgb8: np.ndarray) -> None:
    gray = rgb8[..., 0]
    out = to_float_rgb(gray)
    assert out.shape == (20, 30, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray / np.float32(255))
    np.testing.assert_array_equal(to_float_rgb(gray[..., None]), out)
    rgba = np.concatenate([rgb8, np.zeros((20, 30, 1), np.uint8)], axis=2)
    np.testing.assert_array_equal(to_float_rgb(rgba), to_float_rgb(rgb8))  # alpha dropped


def test_uint16_and_float(rgb8: np.ndarray) -> None:
    u16 = rgb8.astype(np.uint16) * 257  # 8-bit values spread over 16 bits
    np.testing.assert_allclose(to_float_rgb(u16), to_float_rgb(rgb8), atol=1e-6)
    f = rgb8.astype(np.float64) / 255
    np.testing.assert_allclose(to_float_rgb(f), to_float_rgb(rgb8), atol=1e-6)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_float_rgb(rgb8.astype(np.float32))  # 0-255 floats are rejected, not guessed
    with pytest.raises(ValueError, match="NaN"):
        to_float_rgb(np.full((4, 4), np.nan, np.float32))


def test_bad_arrays() -> None:
    with pytest.raises(TypeError, match="dtype"):
        to_float_rgb(np.zeros((4, 4), np.int32))
    with pytest.raises(TypeError, match="dtype"):
        to_float_rgb(np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="channels"):
        to_float_rgb(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        to_float_rgb(np.zeros((4,), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        to_float_rgb(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(TypeError, match="path, a PIL image"):
        to_float_rgb(3.0)


def test_tensor_is_channels_first(rgb8: np.ndarray) -> None:
    t = torch.from_numpy(rgb8).permute(2, 0, 1)
    np.testing.assert_array_equal(to_float_rgb(t), to_float_rgb(rgb8))
    tf = t.float() / 255
    np.testing.assert_allclose(to_float_rgb(tf), to_float_rgb(rgb8), atol=1e-6)


def test_files_and_pil(tmp_path, rgb8: np.ndarray) -> None:
    ref = to_float_rgb(rgb8)
    for ext in ("png", "bmp", "tiff"):
        p = tmp_path / f"a.{ext}"
        Image.fromarray(rgb8).save(p)
        np.testing.assert_array_equal(load_image(p), ref)
        np.testing.assert_array_equal(to_float_rgb(str(p)), ref)
    jpg = tmp_path / "a.jpg"
    Image.fromarray(rgb8).save(jpg, quality=95)
    assert load_image(jpg).shape == (20, 30, 3)
    # 16-bit grayscale PNG keeps 16-bit precision
    g16 = (np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) * 100).astype(np.uint16)
    p16 = tmp_path / "g16.png"
    Image.fromarray(g16).save(p16)
    out = load_image(p16)
    np.testing.assert_allclose(out[..., 1], g16 / 65535.0, atol=1e-7)
    # PIL palette / gray modes
    np.testing.assert_array_equal(to_float_rgb(Image.fromarray(rgb8)), ref)
    assert to_float_rgb(Image.fromarray(rgb8[..., 0])).shape == (20, 30, 3)


def test_file_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="decode"):
        load_image(bad)


def test_as_image_list(rgb8: np.ndarray) -> None:
    assert len(as_image_list(rgb8)) == 1
    assert len(as_image_list(np.stack([rgb8] * 3))) == 3
    t = torch.zeros(2, 3, 8, 8)
    assert len(as_image_list(t)) == 2
    assert len(as_image_list(["a.png", rgb8])) == 2
    assert len(as_image_list(iter([rgb8, rgb8]))) == 2
    with pytest.raises(ValueError, match="at least one"):
        as_image_list([])
    with pytest.raises(ValueError, match="batch"):
        as_image_list(np.zeros((1, 2, 3, 4, 5), np.uint8))
    with pytest.raises(TypeError, match="sequence"):
        as_image_list(3)
    assert [len(b) for b in iter_batches(list(range(7)), 3)] == [3, 3, 1]
    with pytest.raises(ValueError, match="batch_size"):
        list(iter_batches([1], 0))


def test_preprocess_matches_torchvision_transforms(rgb8: np.ndarray) -> None:
    from torchvision.transforms import v2

    img = np.random.default_rng(1).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    out = preprocess([img], resize=32, crop=24)
    assert out.shape == (1, 3, 24, 24) and out.dtype == torch.float32
    tf = v2.Compose(
        [
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Resize(32, antialias=True),
            v2.CenterCrop(24),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    torch.testing.assert_close(out[0], tf(img), atol=1e-5, rtol=1e-5)


def test_preprocess_constant_image_and_geometry_errors() -> None:
    img = np.full((40, 50, 3), 128, np.uint8)
    out = preprocess([img, img], resize=16, crop=16)
    expected = (128 / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out.mean(dim=(2, 3))[0].numpy(), expected, atol=1e-5)
    with pytest.raises(ValueError, match="crop must be <= resize"):
        preprocess([img], resize=16, crop=32)
    with pytest.raises(TypeError, match="resize"):
        preprocess([img], resize=16.5, crop=8)  # type: ignore[arg-type]


def test_transform_mask_geometry() -> None:
    mask = np.zeros((40, 80), np.uint8)
    mask[:, 40:] = 255  # right half
    out = transform_mask(mask, resize=20, crop=20)
    assert out.dtype == bool and out.shape == (20, 20)
    # resize -> (20, 40); centre crop keeps columns 10..29: the right half starts at column 10
    assert not out[:, :10].any() and out[:, 10:].all()
    with pytest.raises(ValueError, match="mask"):
        transform_mask(np.zeros((0, 3)))
