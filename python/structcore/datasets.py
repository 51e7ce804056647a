"""Data sets on disk: MVTec AD, VisA, a generic folder layout and Magnetic Tile.

Every loader returns a :class:`DatasetSplit`: the defect-free training images and the test
samples (image path, label, defect type, mask path or ``None``). Images are read with
:func:`read_image` (any of JPEG, PNG, BMP, TIFF; 8- or 16-bit; gray, palette, RGB or RGBA) and
masks with :func:`load_mask`, which also maps them into the detector's crop geometry
(torchvision ``Resize(resize)`` of the shorter side, then ``CenterCrop(crop)``; nearest
interpolation for masks), so that a mask lines up pixel for pixel with ``Prediction.maps``.

Layouts
-------
``mvtec``
    ``<root>/<category>/train/good/*``, ``test/<defect>/*`` (``good`` = normal),
    ``ground_truth/<defect>/<stem>_mask.png``. ``root`` may also be the category folder itself.
``visa``
    VisA's split CSV (columns ``object,split,label,image,mask``; paths relative to the VisA
    root; ``label`` is ``normal`` or ``anomaly``), by default ``<root>/split_csv/1cls.csv``.
``folder``
    ``<root>/good/*`` normal images and ``<root>/<defect>/*`` defective ones, with no split:
    :func:`split_normal` sends a seeded fraction of the good images to the test set. Masks are
    optional: in a masks folder (``<masks>/<defect>/<stem><suffix>.*``,
    ``<masks>/<defect>/<stem>.*``
    or ``<masks>/<stem><suffix>.*``) or beside the image (``<stem><suffix>.*``, default suffix
    ``_mask``). If ``<root>`` has ``train/`` and ``test/`` folders it is read as the MVTec layout.
``mtd`` (Magnetic Tile, Huang et al. 2018)
    ``<root>/MT_<class>/Imgs/<name>.jpg`` with its mask ``<name>.png`` beside it; ``MT_Free`` is
    the normal class. No official split: :func:`split_normal` makes a seeded one (below).

The seeded split (:func:`split_normal`)
---------------------------------------
The normal images are sorted by path, permuted with ``numpy.random.default_rng(seed)``, and the
first ``round(test_fraction * n)`` of the permutation (at least 1, and at most ``n - 1``) go to
the test set; the next ``max_train`` (all when ``None``) form the training set. Every defective
image goes to the test set. Both lists are returned sorted by path. The default is
``test_fraction=0.2``, ``seed=0``.

Missing masks
-------------
A test sample without a mask is valid. Normal samples always count as an all-zero mask (a mask
file beside a normal image is ignored). A defective sample whose mask file is absent has
``mask=None``: it counts for the image metrics and is left out of the pixel metrics (AUROC,
AUPRO), which a caller reports as ``null`` when no defective test image has a mask.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ._validation import check_choice, check_int

__all__ = [
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "DatasetSplit",
    "Sample",
    "crop_geometry",
    "crop_image",
    "list_images",
    "load_dataset",
    "load_folder",
    "load_magnetic_tile",
    "load_mask",
    "load_mvtec",
    "load_visa",
    "mvtec_categories",
    "read_image",
    "read_mask",
    "split_normal",
]

#: Image file extensions the loaders pick up (compared case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

#: Data set layouts understood by :func:`load_dataset`.
FORMATS: tuple[str, ...] = ("mvtec", "visa", "folder", "mtd")

_LOSSY = (".jpg", ".jpeg")


@dataclass(frozen=True)
class Sample:
    """One test image.

    Attributes
    ----------
    image : Path
        The image file.
    label : int
        0 for a normal (defect-free) image, 1 for a defective one.
    defect : str
        Defect type (``"good"`` for normal images).
    mask : Path or None
        Ground-truth mask file, ``None`` when there is none (always ``None`` for normal images,
        whose mask is all zero by definition).
    """

    image: Path
    label: int
    defect: str
    mask: Path | None = None


@dataclass(frozen=True)
class DatasetSplit:
    """A category's training images (all defect-free) and its labelled test samples.

    Attributes
    ----------
    name : str
        Category name.
    format : str
        The layout it was read from (one of :data:`FORMATS`, or ``"synthetic"``).
    root : Path
        Where it was read from.
    train : tuple of Path
        Defect-free training images, sorted.
    test : tuple of Sample
        Test samples, sorted by (label, defect, path).
    split : str
        How train and test were made (``"official"`` or a description of the seeded split).
    """

    name: str
    format: str
    root: Path
    train: tuple[Path, ...]
    test: tuple[Sample, ...]
    split: str = "official"
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        """Test labels, ndarray of shape (n_test,), int64 (1 = defective)."""
        return np.array([s.label for s in self.test], dtype=np.int64)

    def counts(self) -> dict[str, int]:
        """Numbers of images: train, test, test normal/defective, defective with a mask."""
        n_def = sum(s.label for s in self.test)
        return {
            "train": len(self.train),
            "test": len(self.test),
            "test_good": len(self.test) - n_def,
            "test_defective": n_def,
            "test_defective_with_mask": sum(1 for s in self.test if s.label and s.mask),
        }


# --------------------------------------------------------------------------- reading files


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | Path, *, exclude_suffix: str | None = None) -> list[Path]:
    """Image files directly inside ``folder`` (not recursive), sorted by name.

    Parameters
    ----------
    folder : str or Path
        Folder to list; a missing folder gives an empty list.
    exclude_suffix : str, optional
        Skip files whose stem ends with this (masks stored beside images, e.g. ``"_mask"``).

    Returns
    -------
    list of Path
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = [p for p in folder.iterdir() if _is_image(p)]
    if exclude_suffix:
        out = [p for p in out if not p.stem.endswith(exclude_suffix)]
    return sorted(out)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale pixels to uint8: 16/32-bit integers by 255/65535, floats in [0, 1] by 255."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype.kind in "ui":
        # PIL reads 16-bit files as "I;16" (uint16) or "I" (int32 holding 0..65535).
        scaled = np.clip(arr.astype(np.float64), 0, 65535) * (255.0 / 65535.0)
        return np.rint(scaled).astype(np.uint8)
    if arr.dtype.kind == "f":
        a = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        scale = 255.0 if a.max(initial=0.0) <= 1.0 else 1.0
        return np.rint(np.clip(a * scale, 0, 255)).astype(np.uint8)
    raise TypeError(f"unsupported pixel type {arr.dtype}")


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB.

    Parameters
    ----------
    path : str or Path
        A JPEG, PNG, BMP or TIFF file: 8- or 16-bit, gray, palette, RGB or RGBA.

    Returns
    -------
    ndarray of shape (H, W, 3), uint8
        16-bit values are scaled by 255/65535; gray is replicated to three channels; alpha is
        dropped (not composited); float TIFFs in [0, 1] are scaled by 255.

    Raises
    ------
    OSError
        The file is missing or not a readable image (the message names the file).
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("RGB", "L"):
                arr = np.asarray(im)
            elif mode in ("P", "PA", "RGBA", "LA", "CMYK", "YCbCr", "1", "RGBX", "HSV", "LAB"):
                arr = np.asarray(im.convert("RGB"))
            else:  # "I;16*", "I", "F" and other single-channel high-depth modes
                arr = _to_uint8(np.asarray(im))
    except (OSError, ValueError, SyntaxError) as exc:  # PIL raises all three on bad files
        raise OSError(f"cannot read image {path}: {exc}") from exc
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    elif arr.ndim == 3 and arr.shape[2] == 2:
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    if arr.dtype != np.uint8:
        arr = _to_uint8(arr)
    return np.ascontiguousarray(arr)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a ground-truth mask at its own size.

    Parameters
    ----------
    path : str or Path
        JPEG, PNG, BMP or TIFF; 1-, 8- or 16-bit; gray, palette or colour.

    Returns
    -------
    ndarray of shape (H, W), bool
        True on defect pixels. A pixel is a defect when any colour channel is > 0 (lossless
        files; VisA's masks store class indices 1, 2, ...), or > half the value range for JPEG
        masks (compression noise around 0). Palette images are judged by their index.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "1":
                arr = np.asarray(im.convert("L"))
            elif im.mode in ("P", "PA"):
                arr = np.asarray(im.getchannel(0))  # the palette index
            elif im.mode in ("RGBA", "LA"):
                arr = np.asarray(im)[..., :-1]
            elif im.mode in ("CMYK", "YCbCr"):
                arr = np.asarray(im.convert("RGB"))
            else:
                arr = np.asarray(im)
    except (OSError, ValueError, SyntaxError) as exc:
        raise OSError(f"cannot read mask {path}: {exc}") from exc
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    if arr.dtype == np.bool_:
        return arr.copy()
    if path.suffix.lower() in _LOSSY:
        if arr.dtype.kind == "f":
            threshold = 0.5 if arr.max(initial=0.0) <= 1.0 else 127.5
        else:
            threshold = 32767.5 if arr.max(initial=0) > 255 else 127.5
        return np.asarray(arr > threshold)
    return np.asarray(arr > 0)


def crop_geometry(height: int, width: int, resize: int, crop: int) -> tuple[int, int, int, int]:
    """Size after ``Resize(resize)`` and the ``CenterCrop(crop)`` offsets, as torchvision does.

    Parameters
    ----------
    height, width : int
        Size of the original image, pixels.
    resize : int
        Target length of the shorter side (the longer one is scaled and truncated to int).
    crop : int
        Side of the square centre crop.

    Returns
    -------
    (new_h, new_w, top, left) : tuple of int
        Resized size and the crop's top-left corner in it (negative when the crop is larger
        than the resized image: torchvision then zero-pads, centred).
    """
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = resize, int(resize * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    if crop > new_h or crop > new_w:
        pad_top = (crop - new_h) // 2 if crop > new_h else 0
        pad_left = (crop - new_w) // 2 if crop > new_w else 0
        ph = new_h + (crop - new_h if crop > new_h else 0)
        pw = new_w + (crop - new_w if crop > new_w else 0)
        top = round((ph - crop) / 2.0) - pad_top
        left = round((pw - crop) / 2.0) - pad_left
        return new_h, new_w, top, left
    top = round((new_h - crop) / 2.0)
    left = round((new_w - crop) / 2.0)
    return new_h, new_w, top, left


def load_mask(
    path: str | Path | None,
    *,
    image_size: tuple[int, int] | None = None,
    resize: int = 256,
    crop: int = 224,
) -> np.ndarray:
    """A mask mapped into the detector's crop geometry.

    Parameters
    ----------
    path : str, Path or None
        Mask file (see :func:`read_mask`); ``None`` gives an all-zero mask, which needs
        ``image_size``.
    image_size : (height, width), optional
        Size of the image the mask belongs to. A mask of another size is first resized to it
        (nearest), so masks stored at a different resolution than their image still line up.
    resize, crop : int
        The detector's ``resize`` and ``crop`` (pixels).

    Returns
    -------
    ndarray of shape (crop, crop), bool
        Nearest-neighbour resize of the shorter side to ``resize``, then the centre crop
        (zero-padded like torchvision when the crop is larger).

    Notes
    -----
    The output size and crop offsets are torchvision's (``Resize(resize)``, ``CenterCrop``),
    so the mask lines up with ``Prediction.maps``. The nearest-neighbour sampling is PIL's,
    which takes the source pixel under each output pixel's centre (torchvision on PIL masks
    does the same); :func:`structcore.images.transform_mask` resizes a tensor with torch's
    legacy ``"nearest"`` (``floor(i * scale)``), which can differ by one pixel along region
    borders when downscaling. The centre rule matches the half-pixel-centre convention of the
    bilinear resize applied to the images.
    """
    resize = check_int(resize, "resize", low=1)
    crop = check_int(crop, "crop", low=1)
    if path is None:
        if image_size is None:
            raise ValueError("load_mask needs image_size when path is None")
        h, w = image_size
        mask = np.zeros((h, w), dtype=bool)
    else:
        mask = read_mask(path)
        if image_size is not None and mask.shape != tuple(image_size):
            mask = _resize_nearest(mask, image_size[0], image_size[1])
    h, w = mask.shape
    new_h, new_w, top, left = crop_geometry(h, w, resize, crop)
    if not mask.any():
        return np.zeros((crop, crop), dtype=bool)
    resized = _resize_nearest(mask, new_h, new_w)
    out = np.zeros((crop, crop), dtype=bool)
    # Copy the overlap of [top, top+crop) x [left, left+crop) with the resized mask.
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + crop, new_h), min(left + crop, new_w)
    if y1 > y0 and x1 > x0:
        out[y0 - top : y1 - top, x0 - left : x1 - left] = resized[y0:y1, x0:x1]
    return out


def crop_image(image: np.ndarray, *, resize: int = 256, crop: int = 224) -> np.ndarray:
    """An image in the detector's crop geometry (for overlays of the maps).

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8
    resize, crop : int
        The detector's ``resize`` and ``crop`` (pixels).

    Returns
    -------
    ndarray of shape (crop, crop, 3), uint8
        Bilinear resize of the shorter side to ``resize`` (PIL, as torchvision's ``Resize`` on
        PIL images), then the centre crop (zero-padded when the crop is larger).
    """
    resize = check_int(resize, "resize", low=1)
    crop = check_int(crop, "crop", low=1)
    h, w = image.shape[:2]
    new_h, new_w, top, left = crop_geometry(h, w, resize, crop)
    im = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    resized = np.asarray(im.resize((new_w, new_h), resample=Image.Resampling.BILINEAR))
    out = np.zeros((crop, crop, 3), dtype=np.uint8)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + crop, new_h), min(left + crop, new_w)
    if y1 > y0 and x1 > x0:
        out[y0 - top : y1 - top, x0 - left : x1 - left] = resized[y0:y1, x0:x1]
    return out


def _resize_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a bool mask with PIL (the same sampling torchvision uses)."""
    if mask.shape == (height, width):
        return mask
    im = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
    return np.asarray(im.resize((width, height), resample=Image.Resampling.NEAREST)) > 127


# --------------------------------------------------------------------------- the split


def split_normal(
    paths: Iterable[str | Path],
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_train: int | None = None,
) -> tuple[list[Path], list[Path]]:
    """Seeded split of normal images into training and test images.

    Parameters
    ----------
    paths : iterable of str or Path
        The normal images (at least 2).
    test_fraction : float
        Fraction sent to the test set, in (0, 1); the count is ``round(test_fraction * n)``
        clipped to [1, n - 1].
    seed : int
        Seed of ``numpy.random.default_rng`` for the permutation.
    max_train : int, optional
        Keep at most this many training images (the next ones in the permutation).

    Returns
    -------
    train, test : list of Path
        Disjoint, each sorted by path. The same inputs (in any order) and seed give the same
        split.
    """
    items = sorted({Path(p) for p in paths})
    if len(items) < 2:
        raise ValueError(f"split_normal needs at least 2 normal images; got {len(items)}")
    if not isinstance(test_fraction, (int, float)) or not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction!r}")
    seed = check_int(seed, "seed", low=0)
    n = len(items)
    n_test = min(max(round(test_fraction * n), 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    test = [items[i] for i in order[:n_test]]
    rest = [items[i] for i in order[n_test:]]
    if max_train is not None:
        max_train = check_int(max_train, "max_train", low=1)
        rest = rest[:max_train]
    return sorted(rest), sorted(test)


def _split_note(test_fraction: float, seed: int, max_train: int | None, n_good: int) -> str:
    n_test = min(max(round(test_fraction * n_good), 1), n_good - 1)
    note = (
        f"seeded split (structcore.datasets.split_normal): {n_test} of {n_good} normal images "
        f"to test (test_fraction={test_fraction}, seed={seed})"
    )
    if max_train is not None:
        note += f", training images capped at max_train={max_train}"
    return note + "; all defective images to test"


def _sorted_test(samples: Iterable[Sample]) -> tuple[Sample, ...]:
    return tuple(sorted(samples, key=lambda s: (s.label, s.defect, str(s.image))))


def _cap_train(train: list[Path], max_train: int | None, seed: int) -> list[Path]:
    """Seeded subsample of an official training set (``max_train`` images, sorted)."""
    if max_train is None or len(train) <= max_train:
        return train
    max_train = check_int(max_train, "max_train", low=1)
    order = np.random.default_rng(seed).permutation(len(train))[:max_train]
    return sorted(train[i] for i in order)


# --------------------------------------------------------------------------- MVTec AD


def mvtec_categories(root: str | Path) -> list[str]:
    """Category folders under an MVTec AD root (those with ``train/good``), sorted."""
    root = Path(root)
    if (root / "train" / "good").is_dir():
        return [root.name]
    return sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir())


def _category_root(root: Path, category: str | None) -> Path:
    if category is not None and (root / category / "train").is_dir():
        return root / category
    if (root / "train").is_dir() and (category is None or root.name == category):
        return root
    where = root / category if category else root
    raise FileNotFoundError(
        f"no MVTec AD category at {where} (expected train/good, test/<defect>, ground_truth/)"
    )


def _find_mask(candidates: Sequence[Path]) -> Path | None:
    """First existing file among ``candidates``, also trying every image extension."""
    for cand in candidates:
        if cand.is_file():
            return cand
        for ext in IMAGE_EXTENSIONS:
            for e in (ext, ext.upper()):
                alt = cand.with_suffix(e)
                if alt.is_file():
                    return alt
    return None


def load_mvtec(
    root: str | Path,
    category: str | None = None,
    *,
    max_train: int | None = None,
    seed: int = 0,
) -> DatasetSplit:
    """Read one MVTec AD category.

    Parameters
    ----------
    root : str or Path
        The MVTec AD root (holding category folders) or a category folder itself.
    category : str, optional
        Category name (required unless ``root`` is the category folder).
    max_train : int, optional
        Seeded subsample of the training images (all when ``None``).
    seed : int
        Seed for that subsample.

    Returns
    -------
    DatasetSplit
        ``test/good`` images are normal; every other ``test/<defect>`` folder is defective, with
        its mask at ``ground_truth/<defect>/<stem>_mask.*`` (or ``<stem>.*``) when present.
    """
    root = Path(root)
    croot = _category_root(root, category)
    train = list_images(croot / "train" / "good")
    if not train:
        raise FileNotFoundError(f"no training images in {croot / 'train' / 'good'}")
    samples: list[Sample] = []
    test_dir = croot / "test"
    for defect_dir in (
        sorted(p for p in test_dir.iterdir() if p.is_dir()) if test_dir.is_dir() else []
    ):
        defect = defect_dir.name
        for img in list_images(defect_dir):
            if defect == "good":
                samples.append(Sample(img, 0, "good", None))
                continue
            gt = croot / "ground_truth" / defect
            mask = _find_mask([gt / f"{img.stem}_mask{img.suffix}", gt / f"{img.stem}{img.suffix}"])
            samples.append(Sample(img, 1, defect, mask))
    if not samples:
        raise FileNotFoundError(f"no test images under {test_dir}")
    return DatasetSplit(
        name=category or croot.name,
        format="mvtec",
        root=croot,
        train=tuple(_cap_train(train, max_train, seed)),
        test=_sorted_test(samples),
        split="official"
        if max_train is None
        else f"official; train capped at {max_train} (seed {seed})",
    )


# --------------------------------------------------------------------------- VisA


def _visa_csv(root: Path, split_csv: str | Path | None) -> Path:
    if split_csv is not None:
        p = Path(split_csv)
        if not p.is_file():
            raise FileNotFoundError(f"VisA split CSV not found: {p}")
        return p
    for cand in (root / "split_csv" / "1cls.csv", root / "1cls.csv"):
        if cand.is_file():
            return cand
    raise FileNotFoundError(
        f"no VisA split CSV under {root} (looked for split_csv/1cls.csv and 1cls.csv); "
        "pass split_csv="
    )


def load_visa(
    root: str | Path,
    category: str,
    *,
    split_csv: str | Path | None = None,
    max_train: int | None = None,
    seed: int = 0,
) -> DatasetSplit:
    """Read one VisA category from its split CSV.

    Parameters
    ----------
    root : str or Path
        The VisA root; CSV paths are relative to it.
    category : str
        The ``object`` column's value (e.g. ``"candle"``).
    split_csv : str or Path, optional
        The CSV (columns ``object,split,label,image,mask``); default ``<root>/split_csv/1cls.csv``.
    max_train, seed
        Seeded subsample of the training images, as in :func:`load_mvtec`.

    Returns
    -------
    DatasetSplit
        Rows with ``split == "train"`` must be normal; ``label`` is ``normal`` or ``anomaly``
        (``0``/``1`` and ``good`` also accepted); an empty ``mask`` cell means no mask.
    """
    root = Path(root)
    csv_path = _visa_csv(root, split_csv)
    train: list[Path] = []
    samples: list[Sample] = []
    with csv_path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        need = {"object", "split", "label", "image", "mask"}
        if reader.fieldnames is None or not need <= {f.strip() for f in reader.fieldnames}:
            raise ValueError(
                f"{csv_path}: expected columns {sorted(need)}; got {reader.fieldnames}"
            )
        for row in reader:
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            if row["object"] != category:
                continue
            label_text = row["label"].lower()
            if label_text in ("normal", "good", "0", "ok"):
                label = 0
            elif label_text in ("anomaly", "anomalous", "defect", "1", "bad", "ng"):
                label = 1
            else:
                raise ValueError(f"{csv_path}: unknown label {row['label']!r}")
            image = root / row["image"]
            split = row["split"].lower()
            if split == "train":
                if label:
                    raise ValueError(f"{csv_path}: anomalous training image {row['image']}")
                train.append(image)
            elif split == "test":
                mask = root / row["mask"] if (label and row["mask"]) else None
                if mask is not None and not mask.is_file():
                    mask = None
                defect = "good" if label == 0 else "anomaly"
                samples.append(Sample(image, label, defect, mask))
            else:
                raise ValueError(f"{csv_path}: unknown split {row['split']!r}")
    if not train or not samples:
        raise FileNotFoundError(
            f"{csv_path}: category {category!r} has {len(train)} train and {len(samples)} test rows"
        )
    return DatasetSplit(
        name=category,
        format="visa",
        root=root,
        train=tuple(_cap_train(sorted(train), max_train, seed)),
        test=_sorted_test(samples),
        split=f"official ({csv_path.name})",
    )


# --------------------------------------------------------------------------- generic folders


def load_folder(
    root: str | Path,
    *,
    good: str = "good",
    masks: str | Path | None = None,
    mask_suffix: str = "_mask",
    test_fraction: float = 0.2,
    seed: int = 0,
    max_train: int | None = None,
    name: str | None = None,
) -> DatasetSplit:
    """Read a generic folder layout: a folder of good images and one folder per defect type.

    Parameters
    ----------
    root : str or Path
        Holds ``<good>/`` and defect folders. If it holds ``train/`` and ``test/`` instead,
        it is read as the MVTec layout (official split).
    good : str
        Name of the normal folder.
    masks : str or Path, optional
        Masks folder (relative to ``root`` or absolute). Default: ``<root>/masks`` or
        ``<root>/ground_truth`` when present. Masks may also lie beside their images.
    mask_suffix : str
        Stem suffix of mask files (``<stem><suffix>.<ext>``); files with it are not images.
    test_fraction, seed, max_train
        The seeded split of the good images (:func:`split_normal`).
    name : str, optional
        Category name (default: the folder's name).

    Returns
    -------
    DatasetSplit
    """
    root = Path(root)
    if (root / "train").is_dir() and (root / "test").is_dir():
        ds = load_mvtec(root, max_train=max_train, seed=seed)
        return DatasetSplit(name or ds.name, "folder", ds.root, ds.train, ds.test, ds.split)
    good_dir = root / good
    normals = list_images(good_dir, exclude_suffix=mask_suffix or None)
    if not normals:
        raise FileNotFoundError(f"no normal images in {good_dir}")
    if masks is None:
        mask_dir = next((root / m for m in ("masks", "ground_truth") if (root / m).is_dir()), None)
    else:
        mask_dir = Path(masks) if Path(masks).is_absolute() else root / masks
        if not mask_dir.is_dir():
            raise FileNotFoundError(f"masks folder not found: {mask_dir}")
    train, test_good = split_normal(
        normals, test_fraction=test_fraction, seed=seed, max_train=max_train
    )
    samples = [Sample(p, 0, good, None) for p in test_good]
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if d.name == good or (mask_dir is not None and d.resolve() == mask_dir.resolve()):
            continue
        for img in list_images(d, exclude_suffix=mask_suffix or None):
            cands: list[Path] = []
            if mask_dir is not None:
                cands += [
                    mask_dir / d.name / f"{img.stem}{mask_suffix}{img.suffix}",
                    mask_dir / d.name / f"{img.stem}{img.suffix}",
                    mask_dir / f"{img.stem}{mask_suffix}{img.suffix}",
                ]
            if mask_suffix:
                cands.append(d / f"{img.stem}{mask_suffix}{img.suffix}")
            samples.append(Sample(img, 1, d.name, _find_mask(cands)))
    return DatasetSplit(
        name=name or root.name,
        format="folder",
        root=root,
        train=tuple(train),
        test=_sorted_test(samples),
        split=_split_note(test_fraction, seed, max_train, len(normals)),
    )


# --------------------------------------------------------------------------- Magnetic Tile


def load_magnetic_tile(
    root: str | Path,
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_train: int | None = None,
    defects: Sequence[str] | None = None,
) -> DatasetSplit:
    """Read the Magnetic Tile defect set (Huang et al. 2018) with a seeded split.

    Parameters
    ----------
    root : str or Path
        Holds ``MT_Free`` (normal) and ``MT_<Defect>`` folders, each with ``Imgs/<name>.jpg``
        and the mask ``Imgs/<name>.png`` beside it.
    test_fraction, seed, max_train
        The split of ``MT_Free`` (:func:`split_normal`); every defective image is a test image.
    defects : sequence of str, optional
        Defect classes to include (e.g. ``["Blowhole", "Crack"]``); all when ``None``.

    Returns
    -------
    DatasetSplit
        Named ``"magnetic_tile"``; defect names without the ``MT_`` prefix.
    """
    root = Path(root)
    free = root / "MT_Free" / "Imgs"
    jpgs = sorted(p for p in free.glob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    if not jpgs:
        raise FileNotFoundError(f"no MT_Free/Imgs/*.jpg under {root}")
    train, test_good = split_normal(
        jpgs, test_fraction=test_fraction, seed=seed, max_train=max_train
    )
    samples = [Sample(p, 0, "good", None) for p in test_good]
    classes = sorted(p.name[3:] for p in root.glob("MT_*") if p.is_dir() and p.name != "MT_Free")
    if defects is not None:
        unknown = sorted(set(defects) - set(classes))
        if unknown:
            raise ValueError(f"defects: unknown classes {unknown}; available {classes}")
        classes = [c for c in classes if c in set(defects)]
    for cls in classes:
        for img in sorted((root / f"MT_{cls}" / "Imgs").glob("*")):
            if img.suffix.lower() not in (".jpg", ".jpeg"):
                continue
            mask = img.with_suffix(".png")
            samples.append(Sample(img, 1, cls, mask if mask.is_file() else None))
    return DatasetSplit(
        name="magnetic_tile",
        format="mtd",
        root=root,
        train=tuple(train),
        test=_sorted_test(samples),
        split=_split_note(test_fraction, seed, max_train, len(jpgs)),
    )


# --------------------------------------------------------------------------- dispatcher


def load_dataset(
    format: str,
    root: str | Path,
    category: str | None = None,
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_train: int | None = None,
    split_csv: str | Path | None = None,
    mask_suffix: str = "_mask",
) -> DatasetSplit:
    """Read a category in any supported layout (see the module docstring).

    Parameters
    ----------
    format : {"mvtec", "visa", "folder", "mtd"}
        The layout.
    root : str or Path
        Data root.
    category : str, optional
        Category (MVTec AD, VisA; for ``folder`` a sub-folder of ``root``; ignored for ``mtd``).
    test_fraction, seed, max_train, split_csv, mask_suffix
        Passed to the loader that uses them.

    Returns
    -------
    DatasetSplit
    """
    check_choice(format, "format", FORMATS)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data root not found: {root}")
    if format == "mvtec":
        return load_mvtec(root, category, max_train=max_train, seed=seed)
    if format == "visa":
        if category is None:
            raise ValueError("format 'visa' needs a category (the CSV's object column)")
        return load_visa(root, category, split_csv=split_csv, max_train=max_train, seed=seed)
    if format == "folder":
        folder = root / category if category else root
        return load_folder(
            folder,
            mask_suffix=mask_suffix,
            test_fraction=test_fraction,
            seed=seed,
            max_train=max_train,
            name=category,
        )
    return load_magnetic_tile(root, test_fraction=test_fraction, seed=seed, max_train=max_train)
