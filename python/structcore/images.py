"""Image loading, conversion and preprocessing for the detector.

Every image the detector sees goes through two steps:

1. :func:`to_float_rgb` turns one image of any supported kind into a float32 ``(H, W, 3)``
   RGB array with values in ``[0, 1]``;
2. :func:`preprocess` resizes and crops a batch of those and normalises it for an
   ImageNet backbone (METHOD.md §1.1).

Supported inputs and their conversions (one image):

==============================  ===============================================================
input                           conversion
==============================  ===============================================================
``str`` / ``os.PathLike``       opened with Pillow (PNG, JPEG, BMP, TIFF, ...), then as below
``PIL.Image.Image``             mode ``1``/``L``/``P``/``RGB``/``RGBA``/``LA``/``CMYK``/...:
                                converted to RGB by Pillow (8-bit, divided by 255);
                                modes ``I;16*`` and ``I`` (16-bit PNG/TIFF): divided by 65535;
                                mode ``F``: taken as is (must lie in [0, 1])
``numpy.ndarray`` ``(H, W)``,   channels last, **RGB order** (OpenCV users: convert from BGR);
``(H, W, 1)``, ``(H, W, 3)``,   uint8 / 255, uint16 / 65535, float16/32/64 taken as is (must
``(H, W, 4)``                   lie in [0, 1]); bool, signed and other integer types raise
                                :class:`TypeError`
``torch.Tensor`` ``(H, W)``,    channels first (torchvision's convention), same dtype rules as
``(1|3|4, H, W)``               NumPy arrays
==============================  ===============================================================

Grayscale is replicated to three channels; an alpha channel is dropped (not composited).
16-bit colour files that Pillow opens as 8-bit RGB keep Pillow's 8-bit values.

Size limits (checked before anything image-sized is allocated, each error names the limit):

* an image may hold at most :data:`MAX_IMAGE_PIXELS` pixels (``H * W``; Pillow's own
  decompression-bomb limit by default). Files are checked from their header, before they are
  decoded; decompression bombs that Pillow itself refuses raise the same :class:`ValueError`.
  To accept larger images set ``structcore.images.MAX_IMAGE_PIXELS`` (and, for files, Pillow's
  ``PIL.Image.MAX_IMAGE_PIXELS``) higher;
* the resized image (shorter side ``resize``, aspect ratio kept) may hold at most
  :data:`MAX_IMAGE_PIXELS` pixels as well, which refuses extreme aspect ratios (a 1 x 100000
  strip would become 256 x 25.6 million pixels);
* tiny images (down to 1 x 1) are upsampled like any other.

Truncated or unreadable files raise :class:`ValueError` (missing ones
:class:`FileNotFoundError`); :meth:`structcore.Detector.predict` with ``errors="skip"`` reports
such failures per image and scores the rest of the batch.

A *batch* (what :func:`as_image_list` accepts) is one image as above, a sequence of them
(list or tuple, mixed kinds allowed), a 4-D array ``(B, H, W, C)`` or a 4-D tensor
``(B, C, H, W)``. Paths are opened lazily, batch by batch, so large folders stream.

Preprocessing follows torchvision's ``Resize(resize)`` (the shorter side becomes ``resize``,
the aspect ratio is kept, bilinear with antialiasing) followed by ``CenterCrop(crop)`` and
``Normalize(IMAGENET_MEAN, IMAGENET_STD)``. It runs on float tensors, so 16-bit inputs keep
their precision; a pipeline that resizes 8-bit PIL images first differs from this one by
Pillow's rounding (below 1/255). Non-square inputs get the same transform: the centre square
of the resized image is kept. :func:`transform_mask` applies the same geometry to masks with
nearest-neighbour interpolation.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ._validation import check_int

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MAX_IMAGE_PIXELS",
    "as_image_list",
    "iter_batches",
    "load_image",
    "preprocess",
    "preprocess_one",
    "to_float_rgb",
    "transform_mask",
]

#: ImageNet channel means (RGB), as in torchvision's model cards.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
#: ImageNet channel standard deviations (RGB).
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Most pixels (``H * W``) an input image, and the image resized to ``resize``, may hold.
#: Pillow's default decompression-bomb limit (about 89.5 megapixels; 1 GiB of float32 RGB).
MAX_IMAGE_PIXELS = 89_478_485


def _check_pixels(height: int, width: int, name: str) -> None:
    n = int(height) * int(width)
    if n > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"{name}: {height} x {width} = {n} pixels is above the limit "
            f"structcore.images.MAX_IMAGE_PIXELS = {MAX_IMAGE_PIXELS} (a decompression bomb, "
            "or raise the limit for genuinely large images)"
        )


def _is_tensor(x: object) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _is_pil(x: object) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return False
    return isinstance(x, Image.Image)


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file into a float32 RGB array in [0, 1].

    Parameters
    ----------
    path : str or path-like
        Any file Pillow can open (PNG, JPEG, BMP, TIFF; 8- or 16-bit; gray or colour).

    Returns
    -------
    image : ndarray of shape (H, W, 3), float32
        RGB values in [0, 1] (see the module docstring for the conversions).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file is not an image Pillow can decode.
    """
    p = os.fspath(path)
    with _open_image(p) as im:
        try:
            im.load()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ValueError(f"could not decode image file {p!r}: {exc}") from exc
        return _pil_to_float(im, name=p)


def _open_image(p: str) -> Any:
    """``PIL.Image.open`` with the size guard; decoding happens later (``load``)."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(p):
        raise FileNotFoundError(f"image file not found: {p!r}")
    try:
        im = Image.open(p)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow refuses (error) or, when warnings are errors, flags (warning) the header size.
        raise ValueError(
            f"{p!r}: refused as a decompression bomb ({exc}); the limit is "
            f"structcore.images.MAX_IMAGE_PIXELS = {MAX_IMAGE_PIXELS} pixels"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ValueError(f"could not decode image file {p!r}: {exc}") from exc
    try:
        width, height = im.size
        _check_pixels(height, width, repr(p))
    except BaseException:
        im.close()
        raise
    return im


def _pil_to_float(im: Any, name: str) -> np.ndarray:
    _check_pixels(im.size[1], im.size[0], name)
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im).astype(np.float32) / 65535.0
        if arr.min() < 0 or arr.max() > 1:
            raise ValueError(f"{name}: 32-bit integer image with values outside [0, 65535]")
        return _gray_or_rgb(arr[..., None] if arr.ndim == 2 else arr, name)
    if mode == "F":
        return _float_image(np.asarray(im, dtype=np.float32), name)
    if mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.float32) / np.float32(255.0)


def _float_image(arr: np.ndarray, name: str) -> np.ndarray:
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: image contains NaN or Inf values")
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError(
            f"{name}: float images must lie in [0, 1]; got values in "
            f"[{float(arr.min()):.4g}, {float(arr.max()):.4g}] (scale 0-255 data to uint8 first)"
        )
    if arr.ndim == 2:
        arr = arr[..., None]
    return _gray_or_rgb(arr, name)


def _gray_or_rgb(arr: np.ndarray, name: str) -> np.ndarray:
    # arr: (H, W, C) float32 in [0, 1]
    c = arr.shape[2]
    if c == 1:
        return np.ascontiguousarray(np.repeat(arr, 3, axis=2))
    if c in (3, 4):
        return np.ascontiguousarray(arr[..., :3])
    raise ValueError(f"{name}: expected 1, 3 or 4 channels; got {c} (shape {arr.shape})")


def _array_to_float(arr: np.ndarray, name: str, channels_first: bool) -> np.ndarray:
    if arr.ndim == 3 and channels_first:
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        layout = "(H, W) or (C, H, W)" if channels_first else "(H, W) or (H, W, C)"
        raise ValueError(f"{name} must have shape {layout}; got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must not be empty; got shape {arr.shape}")
    if arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"{name}: expected 1, 3 or 4 channels; got shape {arr.shape}")
    _check_pixels(arr.shape[0], arr.shape[1], name)
    kind = arr.dtype
    if kind == np.uint8:
        out = arr.astype(np.float32) / np.float32(255.0)
    elif kind == np.uint16:
        out = arr.astype(np.float32) / np.float32(65535.0)
    elif kind.kind == "f":
        return _float_image(arr, name)
    else:
        raise TypeError(f"{name} must be uint8, uint16 or float in [0, 1]; got dtype {kind}")
    return _gray_or_rgb(out, name)


def to_float_rgb(image: object, name: str = "image") -> np.ndarray:
    """Convert one image of any supported kind to a float32 RGB array in [0, 1].

    Parameters
    ----------
    image : path, PIL image, ndarray or torch.Tensor
        One image; see the module docstring for layouts and dtype rules.
    name : str
        Name used in error messages.

    Returns
    -------
    image : ndarray of shape (H, W, 3), float32
        RGB in [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> to_float_rgb(np.full((2, 3), 255, np.uint8)).shape
    (2, 3, 3)
    """
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if _is_pil(image):
        return _pil_to_float(image, name)
    if _is_tensor(image):
        arr = image.detach().cpu()  # type: ignore[attr-defined]
        if str(arr.dtype) == "torch.bfloat16":
            arr = arr.float()
        return _array_to_float(arr.numpy(), name, channels_first=True)
    if isinstance(image, np.ndarray):
        return _array_to_float(image, name, channels_first=False)
    raise TypeError(
        f"{name} must be a path, a PIL image, a NumPy array or a torch tensor; "
        f"got {type(image).__name__}"
    )


def as_image_list(images: object, name: str = "images") -> list[object]:
    """Split a batch argument into a list of single images (not loaded yet).

    Parameters
    ----------
    images : image, sequence of images, ndarray (B, H, W, C) or tensor (B, C, H, W)
        What :meth:`structcore.Detector.fit` and ``predict`` accept.
    name : str
        Name used in error messages.

    Returns
    -------
    items : list
        One entry per image (paths stay paths, arrays become views).

    Raises
    ------
    ValueError
        An empty batch.
    TypeError
        An unsupported kind of input.
    """
    if isinstance(images, (str, os.PathLike)) or _is_pil(images):
        items: list[object] = [images]
    elif _is_tensor(images) or isinstance(images, np.ndarray):
        ndim = images.ndim  # type: ignore[attr-defined]
        if ndim == 4:
            items = [images[i] for i in range(images.shape[0])]  # type: ignore[index]
        elif ndim in (2, 3):
            items = [images]
        else:
            layout = "(B, C, H, W)" if _is_tensor(images) else "(B, H, W, C)"
            shape = tuple(images.shape)  # type: ignore[attr-defined]
            raise ValueError(f"{name} must be one image or a batch {layout}; got shape {shape}")
    elif isinstance(images, (Sequence, Iterator)):
        items = list(images)
    else:
        raise TypeError(
            f"{name} must be an image (path, PIL, ndarray, tensor) or a sequence of images; "
            f"got {type(images).__name__}"
        )
    if not items:
        raise ValueError(f"{name} must contain at least one image; got an empty batch")
    return items


def iter_batches(items: Sequence[object], batch_size: int) -> Iterator[list[object]]:
    """Yield consecutive slices of ``items`` of at most ``batch_size`` entries."""
    batch_size = check_int(batch_size, "batch_size", low=1)
    for start in range(0, len(items), batch_size):
        yield list(items[start : start + batch_size])


def _check_geometry(resize: object, crop: object) -> tuple[int, int]:
    r = check_int(resize, "resize", low=1, high=16384)
    c = check_int(crop, "crop", low=1, high=16384)
    if c > r:
        raise ValueError(f"crop must be <= resize; got crop={c}, resize={r}")
    return r, c


def _resized_side(height: int, width: int, resize: int, name: str) -> None:
    """Refuse images whose resized version (shorter side ``resize``) would be too large."""
    short, long = min(height, width), max(height, width)
    # torchvision: the long side becomes int(resize * long / short)
    long_out = int(resize * long / short)
    if resize * long_out > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"{name}: a {height} x {width} image resized to a shorter side of {resize} would "
            f"hold {resize} x {long_out} = {resize * long_out} pixels, above the limit "
            f"structcore.images.MAX_IMAGE_PIXELS = {MAX_IMAGE_PIXELS} (aspect ratio too "
            "extreme; crop the image first)"
        )


def preprocess_one(image: object, resize: int = 256, crop: int = 224, name: str = "image") -> Any:
    """Load, resize, crop and normalise one image (what :func:`preprocess` does per image).

    Parameters
    ----------
    image : path, PIL image, ndarray or torch.Tensor
        One image of any supported kind (see :func:`to_float_rgb`).
    resize, crop : int
        As in :func:`preprocess`.
    name : str
        Name used in error messages.

    Returns
    -------
    x : torch.Tensor of shape (3, crop, crop), float32
        ImageNet-normalised.

    Raises
    ------
    FileNotFoundError, ValueError, TypeError
        The image cannot be read or converted, or is above a size limit (module docstring).
    """
    import torch
    import torchvision.transforms.v2.functional as tvf

    resize, crop = _check_geometry(resize, crop)
    arr = to_float_rgb(image, name=name)
    _resized_side(arr.shape[0], arr.shape[1], resize, name)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    # Channels-first *contiguous*: the antialiased resize of a permuted (channels-last) view is
    # several times slower in torch (bench/bench_e2e.py: 49 -> 13 ms per image at 2 threads).
    t = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    t = tvf.resize(t, [resize], interpolation=tvf.InterpolationMode.BILINEAR, antialias=True)
    t = tvf.center_crop(t, [crop, crop])
    return (t - mean) / std


def preprocess(
    images: Sequence[object],
    resize: int = 256,
    crop: int = 224,
    name: str = "images",
    offset: int = 0,
) -> Any:
    """Load, resize, crop and normalise a list of images into one backbone input tensor.

    Parameters
    ----------
    images : sequence of images
        Single images of any supported kind (see :func:`to_float_rgb`); sizes may differ.
    resize : int
        Target length of the shorter side, in pixels (torchvision ``Resize(resize)``:
        bilinear, antialiased, aspect ratio kept).
    crop : int
        Side of the centre square kept after resizing, in pixels (``<= resize``).
    name : str
        Name used in error messages.
    offset : int
        Index of ``images[0]`` in the caller's whole batch (error messages say
        ``name[offset + i]``).

    Returns
    -------
    batch : torch.Tensor of shape (B, 3, crop, crop), float32
        ImageNet-normalised (:data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`), on the CPU.

    Raises
    ------
    FileNotFoundError, ValueError, TypeError
        The first image that cannot be read, converted, or is above a size limit.
    """
    import torch

    resize, crop = _check_geometry(resize, crop)
    out = torch.empty((len(images), 3, crop, crop), dtype=torch.float32)
    for i, img in enumerate(images):
        out[i] = preprocess_one(img, resize, crop, name=f"{name}[{offset + i}]")
    return out


def transform_mask(mask: object, resize: int = 256, crop: int = 224) -> np.ndarray:
    """Apply the preprocessing geometry to a ground-truth mask (nearest neighbour).

    Parameters
    ----------
    mask : path, PIL image, ndarray (H, W) or torch.Tensor (H, W)
        Nonzero pixels are defective. Colour masks count a pixel as defective if any
        channel is nonzero.
    resize, crop : int
        As in :func:`preprocess`.

    Returns
    -------
    mask : ndarray of shape (crop, crop), bool
        The mask aligned with the detector's maps.
    """
    import torch
    import torchvision.transforms.v2.functional as tvf

    resize, crop = _check_geometry(resize, crop)
    if isinstance(mask, (str, os.PathLike)):
        p = os.fspath(mask)
        with _open_image(p) as im:
            try:
                arr = np.asarray(im)
            except (OSError, SyntaxError, ValueError, EOFError) as exc:
                raise ValueError(f"could not decode mask file {p!r}: {exc}") from exc
    elif _is_pil(mask):
        arr = np.asarray(mask)
    elif _is_tensor(mask):
        arr = mask.detach().cpu().numpy()  # type: ignore[attr-defined]
    else:
        arr = np.asarray(mask)
    if arr.ndim == 3:
        arr = arr.any(axis=2)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"mask must be a non-empty (H, W) image; got shape {arr.shape}")
    _check_pixels(arr.shape[0], arr.shape[1], "mask")
    _resized_side(arr.shape[0], arr.shape[1], resize, "mask")
    t = torch.from_numpy(np.ascontiguousarray(arr != 0, dtype=np.uint8))[None]
    t = tvf.resize(t, [resize], interpolation=tvf.InterpolationMode.NEAREST, antialias=False)
    t = tvf.center_crop(t, [crop, crop])
    return t[0].numpy().astype(bool)
