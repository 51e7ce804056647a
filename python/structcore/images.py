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
    "as_image_list",
    "iter_batches",
    "load_image",
    "preprocess",
    "to_float_rgb",
    "transform_mask",
]

#: ImageNet channel means (RGB), as in torchvision's model cards.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
#: ImageNet channel standard deviations (RGB).
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    from PIL import Image, UnidentifiedImageError

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"image file not found: {p!r}")
    try:
        with Image.open(p) as im:
            im.load()
            return _pil_to_float(im, name=p)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"could not decode image file {p!r}: {exc}") from exc


def _pil_to_float(im: Any, name: str) -> np.ndarray:
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


def preprocess(
    images: Sequence[object], resize: int = 256, crop: int = 224, name: str = "images"
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

    Returns
    -------
    batch : torch.Tensor of shape (B, 3, crop, crop), float32
        ImageNet-normalised (:data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`), on the CPU.
    """
    import torch
    import torchvision.transforms.v2.functional as tvf

    resize, crop = _check_geometry(resize, crop)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    out = torch.empty((len(images), 3, crop, crop), dtype=torch.float32)
    for i, img in enumerate(images):
        arr = to_float_rgb(img, name=f"{name}[{i}]")
        t = torch.from_numpy(arr).permute(2, 0, 1)
        t = tvf.resize(t, [resize], interpolation=tvf.InterpolationMode.BILINEAR, antialias=True)
        t = tvf.center_crop(t, [crop, crop])
        out[i] = (t - mean) / std
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
        from PIL import Image

        with Image.open(os.fspath(mask)) as im:
            arr = np.asarray(im)
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
    t = torch.from_numpy(np.ascontiguousarray(arr != 0, dtype=np.uint8))[None]
    t = tvf.resize(t, [resize], interpolation=tvf.InterpolationMode.NEAREST, antialias=False)
    t = tvf.center_crop(t, [crop, crop])
    return t[0].numpy().astype(bool)
