"""Loaders on tiny layouts written to tmp_path; image and mask reading; the crop geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from structcore import datasets


def _img(path: Path, value: int = 128, size: tuple[int, int] = (20, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path


def _mask(path: Path, size: tuple[int, int] = (20, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros((size[1], size[0]), np.uint8)
    m[4:8, 5:9] = 255
    Image.fromarray(m).save(path)
    return path


# ----------------------------------------------------------------------------- reading


def test_read_image_modes(tmp_path: Path) -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray).save(tmp_path / "g.png")
    got = datasets.read_image(tmp_path / "g.png")
    assert got.shape == (3, 4, 3) and got.dtype == np.uint8
    assert np.array_equal(got[:, :, 1], gray)

    g16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    Image.fromarray(g16).save(tmp_path / "g16.tif")
    for name in ("g16.png", "g16.tif"):
        got = datasets.read_image(tmp_path / name)
        assert np.array_equal(
            got[:, :, 0], np.rint(g16.astype(np.float64) * 255 / 65535).astype(np.uint8)
        ), name

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert np.array_equal(datasets.read_image(tmp_path / "a.png")[..., 0], np.full((2, 2), 200))

    rgb = np.random.default_rng(0).integers(0, 255, (5, 6, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.bmp")
    assert np.array_equal(datasets.read_image(tmp_path / "c.bmp"), rgb)

    Image.fromarray(gray).convert("P").save(tmp_path / "p.png")
    assert np.array_equal(datasets.read_image(tmp_path / "p.png")[:, :, 2], gray)


def test_read_image_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(OSError, match=r"bad\.png"):
        datasets.read_image(tmp_path / "bad.png")
    with pytest.raises(OSError, match=r"missing\.png"):
        datasets.read_image(tmp_path / "missing.png")


def test_read_mask_formats(tmp_path: Path) -> None:
    m = np.zeros((16, 16), bool)
    m[3:9, 4:12] = True
    Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / "m.png")
    Image.fromarray(m.astype(np.uint16) * 65535).save(tmp_path / "m16.png")
    Image.fromarray(m.astype(np.uint16) * 1000).save(tmp_path / "m16.tif")
    Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / "m.bmp")
    Image.fromarray(m.astype(np.uint8)).save(tmp_path / "idx.png")  # VisA: class index 1
    col = np.zeros((16, 16, 3), np.uint8)
    col[m] = (0, 0, 255)
    Image.fromarray(col).save(tmp_path / "rgb.png")
    Image.fromarray(m.astype(np.uint8) * 255).convert("1").save(tmp_path / "bw.png")
    Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / "m.jpg", quality=70)
    for name in ("m.png", "m16.png", "m16.tif", "m.bmp", "idx.png", "rgb.png", "bw.png"):
        got = datasets.read_mask(tmp_path / name)
        assert got.dtype == bool and np.array_equal(got, m), name
    # JPEG: compression noise near 0 is not a defect; a few edge pixels may flip.
    jpg = datasets.read_mask(tmp_path / "m.jpg")
    assert (jpg != m).sum() <= 4


@pytest.mark.parametrize(("h", "w"), [(512, 512), (300, 200), (200, 301), (257, 256), (100, 90)])
@pytest.mark.parametrize(("resize", "crop"), [(256, 224), (224, 224), (256, 250), (64, 80)])
def test_load_mask_matches_torchvision_geometry(
    tmp_path: Path, h: int, w: int, resize: int, crop: int
) -> None:
    tvf = pytest.importorskip("torchvision.transforms.functional")
    rng = np.random.default_rng(h * w + resize)
    m = rng.random((h, w)) > 0.7
    im = Image.fromarray(m.astype(np.uint8) * 255)
    nearest = tvf.InterpolationMode.NEAREST
    want = np.asarray(tvf.center_crop(tvf.resize(im, resize, interpolation=nearest), crop)) > 127
    im.save(tmp_path / "m.png")
    got = datasets.load_mask(tmp_path / "m.png", resize=resize, crop=crop)
    assert got.shape == (crop, crop) and np.array_equal(got, want)
    empty = datasets.load_mask(None, image_size=(h, w), resize=resize, crop=crop)
    assert empty.shape == (crop, crop) and not empty.any()


def test_load_mask_resizes_to_its_image(tmp_path: Path) -> None:
    m = np.zeros((50, 50), np.uint8)
    m[10:20, 10:20] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    a = datasets.load_mask(tmp_path / "m.png", image_size=(100, 100), resize=100, crop=100)
    assert a.sum() == 400 and a[20:40, 20:40].all()


# ----------------------------------------------------------------------------- split


def test_split_normal_is_seeded_and_order_free() -> None:
    paths = [Path(f"/x/{i:03d}.png") for i in range(20)]
    tr, te = datasets.split_normal(paths, test_fraction=0.25, seed=3)
    tr2, te2 = datasets.split_normal(list(reversed(paths)), test_fraction=0.25, seed=3)
    assert (tr, te) == (tr2, te2)
    assert len(te) == 5 and len(tr) == 15 and not set(tr) & set(te)
    assert tr == sorted(tr) and te == sorted(te)
    _, te3 = datasets.split_normal(paths, test_fraction=0.25, seed=4)
    assert te3 != te
    tr4, te4 = datasets.split_normal(paths, test_fraction=0.25, seed=3, max_train=4)
    assert te4 == te and len(tr4) == 4 and set(tr4) <= set(tr)
    with pytest.raises(ValueError, match="test_fraction"):
        datasets.split_normal(paths, test_fraction=1.0)
    with pytest.raises(ValueError, match="at least 2"):
        datasets.split_normal(paths[:1])


# ----------------------------------------------------------------------------- layouts


def _mvtec(root: Path) -> Path:
    c = root / "widget"
    for i in range(3):
        _img(c / "train" / "good" / f"{i:03d}.png")
    _img(c / "test" / "good" / "000.png")
    _img(c / "test" / "dent" / "000.png")
    _img(c / "test" / "dent" / "001.png")  # no mask on purpose
    _mask(c / "ground_truth" / "dent" / "000_mask.png")
    _img(c / "test" / "scuff" / "000.jpg")
    _mask(c / "ground_truth" / "scuff" / "000_mask.png")  # mask in another format
    return root


def test_load_mvtec(tmp_path: Path) -> None:
    _mvtec(tmp_path)
    ds = datasets.load_mvtec(tmp_path, "widget")
    same = datasets.load_mvtec(tmp_path / "widget")  # the category folder itself
    assert ds.test == same.test and ds.train == same.train
    assert ds.counts() == {
        "train": 3,
        "test": 4,
        "test_good": 1,
        "test_defective": 3,
        "test_defective_with_mask": 2,
    }
    by = {(s.defect, s.image.name): s for s in ds.test}
    assert by[("good", "000.png")].mask is None and by[("good", "000.png")].label == 0
    assert by[("dent", "000.png")].mask.name == "000_mask.png"
    assert by[("dent", "001.png")].mask is None and by[("dent", "001.png")].label == 1
    assert by[("scuff", "000.jpg")].mask is not None
    assert list(ds.labels) == [0, 1, 1, 1]
    assert datasets.mvtec_categories(tmp_path) == ["widget"]
    with pytest.raises(FileNotFoundError, match="no MVTec AD category"):
        datasets.load_mvtec(tmp_path, "nothing")
    capped = datasets.load_mvtec(tmp_path, "widget", max_train=2, seed=1)
    assert len(capped.train) == 2 and "capped" in capped.split


def test_load_visa(tmp_path: Path) -> None:
    rows = ["object,split,label,image,mask"]
    for i in range(3):
        _img(tmp_path / "candle" / "Data" / "Images" / "Normal" / f"{i:04d}.JPG")
        rows.append(f"candle,train,normal,candle/Data/Images/Normal/{i:04d}.JPG,")
    _img(tmp_path / "candle" / "Data" / "Images" / "Normal" / "0100.JPG")
    rows.append("candle,test,normal,candle/Data/Images/Normal/0100.JPG,")
    _img(tmp_path / "candle" / "Data" / "Images" / "Anomaly" / "0000.JPG")
    _mask(tmp_path / "candle" / "Data" / "Masks" / "Anomaly" / "0000.png")
    rows.append(
        "candle,test,anomaly,candle/Data/Images/Anomaly/0000.JPG,candle/Data/Masks/Anomaly/0000.png"
    )
    _img(tmp_path / "candle" / "Data" / "Images" / "Anomaly" / "0001.JPG")
    rows.append("candle,test,anomaly,candle/Data/Images/Anomaly/0001.JPG,")
    rows.append("other,train,normal,other/x.JPG,")
    (tmp_path / "split_csv").mkdir()
    (tmp_path / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    ds = datasets.load_visa(tmp_path, "candle")
    assert ds.counts()["train"] == 3 and ds.counts()["test"] == 3
    assert ds.counts()["test_defective_with_mask"] == 1
    with pytest.raises(FileNotFoundError, match="'nothing'"):
        datasets.load_visa(tmp_path, "nothing")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="expected columns"):
        datasets.load_visa(tmp_path, "candle", split_csv=tmp_path / "bad.csv")


def test_load_folder_with_masks_dir_and_beside(tmp_path: Path) -> None:
    for i in range(10):
        _img(tmp_path / "good" / f"g{i}.png")
    _img(tmp_path / "crack" / "a.png")
    _mask(tmp_path / "masks" / "crack" / "a_mask.png")
    _img(tmp_path / "crack" / "b.bmp")
    _mask(tmp_path / "crack" / "b_mask.png")  # beside, with the suffix: not an image
    _img(tmp_path / "hole" / "c.tif")  # no mask at all
    ds = datasets.load_folder(tmp_path, test_fraction=0.3, seed=0)
    assert ds.counts() == {
        "train": 7,
        "test": 6,
        "test_good": 3,
        "test_defective": 3,
        "test_defective_with_mask": 2,
    }
    assert {s.defect for s in ds.test} == {"good", "crack", "hole"}
    assert "seeded split" in ds.split and "seed=0" in ds.split
    again = datasets.load_dataset("folder", tmp_path, test_fraction=0.3, seed=0)
    assert again.test == ds.test and again.train == ds.train


def test_load_folder_without_masks_and_presplit(tmp_path: Path) -> None:
    for i in range(4):
        _img(tmp_path / "a" / "good" / f"{i}.png")
    _img(tmp_path / "a" / "bad" / "x.png")
    ds = datasets.load_dataset("folder", tmp_path, "a")
    assert ds.counts()["test_defective_with_mask"] == 0 and ds.name == "a"
    _mvtec(tmp_path / "b")
    pre = datasets.load_folder(tmp_path / "b" / "widget")
    assert pre.split == "official" and pre.counts()["train"] == 3


def test_load_magnetic_tile_layout(tmp_path: Path) -> None:
    for i in range(10):
        _img(tmp_path / "MT_Free" / "Imgs" / f"f{i}.jpg", size=(30, 40))
        _mask(tmp_path / "MT_Free" / "Imgs" / f"f{i}.png", size=(30, 40))
    for cls in ("Crack", "Blowhole"):
        for i in range(2):
            _img(tmp_path / f"MT_{cls}" / "Imgs" / f"{cls}{i}.jpg", size=(30, 40))
            _mask(tmp_path / f"MT_{cls}" / "Imgs" / f"{cls}{i}.png", size=(30, 40))
    _img(tmp_path / "MT_Crack" / "Imgs" / "nomask.jpg", size=(30, 40))
    ds = datasets.load_magnetic_tile(tmp_path, test_fraction=0.2, seed=0)
    assert ds.counts() == {
        "train": 8,
        "test": 7,
        "test_good": 2,
        "test_defective": 5,
        "test_defective_with_mask": 4,
    }
    assert all(p.suffix == ".jpg" for p in ds.train)
    assert {s.defect for s in ds.test if s.label} == {"Crack", "Blowhole"}
    only = datasets.load_magnetic_tile(tmp_path, defects=["Crack"])
    assert {s.defect for s in only.test if s.label} == {"Crack"}
    with pytest.raises(ValueError, match="unknown classes"):
        datasets.load_magnetic_tile(tmp_path, defects=["Dent"])
    capped = datasets.load_dataset("mtd", tmp_path, max_train=3)
    assert capped.counts()["train"] == 3


def test_load_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format"):
        datasets.load_dataset("coco", tmp_path)
    with pytest.raises(FileNotFoundError, match="data root"):
        datasets.load_dataset("mvtec", tmp_path / "none")
    with pytest.raises(ValueError, match="category"):
        datasets.load_dataset("visa", tmp_path)


def test_real_magnetic_tile_split_is_stable(magnetic_tile: Path) -> None:
    ds = datasets.load_magnetic_tile(magnetic_tile, test_fraction=0.2, seed=0)
    c = ds.counts()
    assert c["test_good"] == 190 and c["train"] == 952 - 190
    assert c["test_defective"] == 115 + 85 + 57 + 32 + 103
    assert c["test_defective_with_mask"] == c["test_defective"]


@pytest.mark.parametrize(("h", "w"), [(512, 512), (373, 248), (900, 900)])
def test_load_mask_agrees_with_the_detector_geometry(tmp_path: Path, h: int, w: int) -> None:
    images = pytest.importorskip("structcore.images")
    pytest.importorskip("torch")
    m = np.zeros((h, w), np.uint8)
    m[h // 5 : h // 2, w // 3 : w // 3 + w // 4] = 255
    m[int(h * 0.7) : int(h * 0.75), 10 : w - 10] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    ours = datasets.load_mask(tmp_path / "m.png", resize=256, crop=224)
    theirs = images.transform_mask(tmp_path / "m.png", resize=256, crop=224)
    assert ours.shape == theirs.shape == (224, 224)
    # Same geometry; the nearest-neighbour conventions differ by at most a pixel at borders.
    iou = (ours & theirs).sum() / (ours | theirs).sum()
    assert iou > 0.9
    # Every disagreement is within one pixel of the other mask: no offset, only rounding.
    from scipy import ndimage

    assert not (ours & ~ndimage.binary_dilation(theirs, np.ones((3, 3)))).any()
    assert not (theirs & ~ndimage.binary_dilation(ours, np.ones((3, 3)))).any()
