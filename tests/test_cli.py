"""The command line: usage errors exit 2, runtime failures exit 1, and end-to-end runs.

Most tests drive the CLI with a tiny stand-in detector (the same fit/predict/variant_scores/
save/load surface as structcore.Detector, no torch) so they test the plumbing quickly; the
tests at the end run the real detector with a small backbone.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from structcore import cli, datasets, synthetic

ROOT = Path(__file__).resolve().parents[1]


class FakeDetector:
    """Mean-image difference maps; mimics the Detector API used by the CLI."""

    def __init__(self, resize: int = 64, crop: int = 56, **kw: object) -> None:
        if kw.get("backbone") == "resnet18" and kw.get("dim") == 7:
            raise ValueError("dim=7 is not supported by this fake")
        self.resize, self.crop, self.kw = resize, crop, kw
        self.decision_threshold_: float | None = None

    def _gray(self, images: list[str]) -> np.ndarray:
        out = []
        for p in images:
            img = datasets.crop_image(datasets.read_image(p), resize=self.resize, crop=self.crop)
            out.append(img.mean(axis=2) / 255.0)
        return np.stack(out).astype(np.float32)

    def fit(self, images: list[str]) -> FakeDetector:
        if self.kw.get("backbone") == "wide_resnet50_2":
            raise RuntimeError("weights unavailable (fake)")
        g = self._gray(images)
        self.mean_ = g.mean(axis=0)
        self.decision_threshold_ = float(np.abs(g - self.mean_).max() * 1.5)
        return self

    def predict(self, images: list[str], batch_size: int | None = None) -> SimpleNamespace:
        maps = np.abs(self._gray(images) - self.mean_)
        smax = maps.reshape(len(maps), -1).max(axis=1)
        struct = maps.reshape(len(maps), -1).std(axis=1)
        return SimpleNamespace(
            maps=maps,
            score_max=smax,
            score_struct=struct,
            score=smax + struct,
            is_anomalous=smax + struct > self.decision_threshold_,
        )

    def variant_scores(self, maps: np.ndarray, score_max: object = None) -> dict[str, np.ndarray]:
        flat = maps.reshape(len(maps), -1)
        return {
            "max": flat.max(axis=1),
            "structcore": flat.max(axis=1) + flat.std(axis=1),
            "struct_only": flat.std(axis=1),
            "paper/l2/auto/crossfit": flat.mean(axis=1),
        }

    def save(self, path: Path) -> None:
        with open(path, "wb") as fh:
            np.savez(
                fh, mean=self.mean_, thr=self.decision_threshold_, geo=[self.resize, self.crop]
            )

    @classmethod
    def load(cls, path: Path, device: object = None) -> FakeDetector:
        z = np.load(path)
        det = cls(int(z["geo"][0]), int(z["geo"][1]))
        det.mean_, det.decision_threshold_ = z["mean"], float(z["thr"])
        return det


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "_detector_class", lambda: FakeDetector)


@pytest.fixture
def tiny_mvtec(tmp_path: Path) -> Path:
    """One synthetic category at 112 px: 6 train, 3 normal + 3 defective test images."""
    return synthetic.write_dataset(
        tmp_path / "data",
        categories=["ceramic_tiles"],
        n_train=6,
        n_test_good=3,
        n_test_defect=1,
        size=112,
    )


# ----------------------------------------------------------------------------- usage: exit 2


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["fit"],
        ["fit", "x.png"],  # no -o
        ["fit", "x.png", "-o", "m.npz", "--k", "0"],
        ["fit", "x.png", "-o", "m.npz", "--lam", "big"],
        ["fit", "x.png", "-o", "m.npz", "--coreset-ratio", "-0.1"],
        ["fit", "x.png", "-o", "m.npz", "--backbone", "vgg16"],
        ["fit", "x.png", "-o", "m.npz", "--threshold-quantile", "1.5"],
        ["fit", "x.png", "-o", "m.npz", "--calibration", "learned"],
        ["eval", "--format", "mvtec", "--root", "."],  # no --out
        ["eval", "--format", "coco", "--root", ".", "--out", "o"],
        ["predict", "model.npz"],  # no images
        ["demo", "--n-train", "0"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_missing_paths_exit_2(
    tmp_path: Path, fake: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["fit", str(tmp_path / "none.png"), "-o", str(tmp_path / "m")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["fit", str(tmp_path / "empty"), "-o", str(tmp_path / "m")]) == 2
    assert cli.main(["predict", str(tmp_path / "none.npz"), str(tmp_path)]) == 2
    assert "model file not found" in capsys.readouterr().err
    out = str(tmp_path / "o")
    assert cli.main(["eval", "--format", "mvtec", "--root", str(tmp_path / "x"), "--out", out]) == 2
    assert cli.main(["eval", "--format", "mvtec", "--root", str(tmp_path), "--out", out]) == 2
    assert cli.main(["eval", "--format", "visa", "--root", str(tmp_path), "--out", out]) == 2
    assert cli.main(["demo", "--categories", "marble", "--out", out]) == 2


def test_detector_rejecting_parameters_is_a_usage_error(
    tiny_mvtec: Path, tmp_path: Path, fake: None
) -> None:
    imgs = str(tiny_mvtec / "ceramic_tiles" / "train" / "good")
    argv = ["fit", imgs, "-o", str(tmp_path / "m.npz"), "--backbone", "resnet18", "--dim", "7"]
    assert cli.main(argv) == 2


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "exit status" in text and "usage error" in text
    assert cli.main(["eval", "--help"]) == 0
    assert cli.main(["--version"]) == 0


def test_python_dash_m(tmp_path: Path) -> None:
    # The same interpreter and environment as this test run: the installed package (CI) or
    # the source tree on PYTHONPATH (developer build), whichever this run imports.
    for module in ("structcore", "structcore.cli"):
        run = subprocess.run(
            [sys.executable, "-m", module, "fit"],
            capture_output=True,
            text=True,
            env=dict(os.environ),
        )
        assert run.returncode == 2 and "required" in run.stderr, module


# ----------------------------------------------------------------------------- plumbing (fake)


def test_fit_then_predict_csv_json_and_overlays(
    tiny_mvtec: Path, tmp_path: Path, fake: None, capsys: pytest.CaptureFixture[str]
) -> None:
    cat = tiny_mvtec / "ceramic_tiles"
    model = tmp_path / "m.npz"
    assert cli.main(["fit", str(cat / "train" / "good"), "-o", str(model), "-q"]) == 0
    assert model.is_file()
    capsys.readouterr()
    assert cli.main(["predict", str(model), str(cat / "test"), "-r", "-q"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert len(rows) == 6 and set(rows[0]) >= {"image", "score", "is_anomalous", "error"}
    assert all(r["error"] == "" for r in rows)
    out = tmp_path / "p.json"
    argv = ["predict", str(model), str(cat / "test" / "crack"), "-o", str(out), "-q"]
    assert cli.main([*argv, "--overlays", str(tmp_path / "ov")]) == 0
    doc = json.loads(out.read_text())
    assert doc["threshold"] > 0 and len(doc["images"]) == 1
    assert doc["images"][0]["score"] >= doc["images"][0]["score_max"]
    overlays = list((tmp_path / "ov").glob("*.png"))
    assert len(overlays) == 1
    with Image.open(overlays[0]) as im:
        assert im.size == (112, 56)  # image | overlay, each crop x crop


def test_predict_with_a_broken_image_exits_1(
    tiny_mvtec: Path, tmp_path: Path, fake: None, capsys: pytest.CaptureFixture[str]
) -> None:
    cat = tiny_mvtec / "ceramic_tiles"
    model = tmp_path / "m.npz"
    assert cli.main(["fit", str(cat / "train" / "good"), "-o", str(model), "-q"]) == 0
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    out = tmp_path / "p.csv"
    argv = ["predict", str(model), str(cat / "test" / "good"), str(bad), "-o", str(out), "-q"]
    assert cli.main(argv) == 1
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert [r["error"] != "" for r in rows] == [False, False, False, True]
    assert rows[-1]["score"] == "" and "broken.png" in capsys.readouterr().err


def test_runtime_failure_exits_1(
    tiny_mvtec: Path, tmp_path: Path, fake: None, capsys: pytest.CaptureFixture[str]
) -> None:
    imgs = str(tiny_mvtec / "ceramic_tiles" / "train" / "good")
    argv = ["fit", imgs, "-o", str(tmp_path / "m.npz"), "--backbone", "wide_resnet50_2"]
    assert cli.main(argv) == 1
    assert "weights unavailable" in capsys.readouterr().err
    assert not (tmp_path / "m.npz").exists()


def test_eval_writes_metrics_table_and_plots(
    tiny_mvtec: Path, tmp_path: Path, fake: None, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ev"
    argv = ["eval", "--format", "mvtec", "--root", str(tiny_mvtec), "--category", "ceramic_tiles"]
    assert cli.main([*argv, "--out", str(out), "--overlays", "1", "--save-model"]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert {"max", "structcore", "struct_only", "paper/l2/auto/crossfit"} <= set(doc["image_auroc"])
    for key in ("pixel_auroc", "aupro", "pixel_f1_max"):
        assert 0.0 <= doc[key] <= 1.0
    assert doc["counts"]["test"] == 6 and doc["counts"]["test_defective_with_mask"] == 3
    assert doc["counts"]["pixel_metric_images"] == 6
    assert doc["per_category"]["ceramic_tiles"]["image_auroc"] == doc["image_auroc"]
    assert doc["config"]["data"]["format"] == "mvtec"
    table = (out / "results.md").read_text()
    assert "| **structcore** |" in table and "AUPRO" in table
    printed = capsys.readouterr().out  # the compact table: headline scores only
    assert "| **structcore** |" in printed and "paper/l2/auto/crossfit" not in printed
    assert "paper/l2/auto/crossfit" in table
    cat = out / "ceramic_tiles"
    for name in ("scores.csv", "histograms.png", "roc.png", "model.npz"):
        assert (cat / name).is_file(), name
    assert len(list((cat / "overlays").glob("*.png"))) == 2


def test_eval_folder_without_masks_has_null_pixel_metrics(tmp_path: Path, fake: None) -> None:
    root = tmp_path / "parts"
    for i in range(8):
        s = synthetic.render("woven_fabric", "good", seed=i, size=112)
        (root / "good").mkdir(parents=True, exist_ok=True)
        Image.fromarray(s.image).save(root / "good" / f"{i}.png")
    for i in range(2):
        s = synthetic.render("woven_fabric", "spot", seed=100 + i, size=112)
        (root / "stain").mkdir(parents=True, exist_ok=True)
        Image.fromarray(s.image).convert("L").save(root / "stain" / f"{i}.bmp")
    out = tmp_path / "ev"
    argv = ["eval", "--format", "folder", "--root", str(root), "--out", str(out), "-q"]
    assert cli.main([*argv, "--test-fraction", "0.25", "--no-plots"]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["pixel_auroc"] is None and doc["aupro"] is None
    assert doc["counts"] == {
        "train": 6,
        "test": 4,
        "test_good": 2,
        "test_defective": 2,
        "test_defective_with_mask": 0,
        "pixel_metric_images": 2,
    }
    assert "seed=0" in doc["per_category"]["parts"]["split"]
    assert "n/a" in (out / "results.md").read_text()


def test_eval_several_categories_reports_the_mean(tmp_path: Path, fake: None) -> None:
    data = synthetic.write_dataset(
        tmp_path / "d",
        categories=["brushed_metal", "woven_fabric"],
        n_train=4,
        n_test_good=2,
        n_test_defect=1,
        size=112,
    )
    out = tmp_path / "ev"
    argv = ["eval", "--format", "mvtec", "--root", str(data), "--out", str(out), "-q"]
    assert cli.main([*argv, "--no-plots"]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["categories"] == ["brushed_metal", "woven_fabric"]
    per = [doc["per_category"][c]["image_auroc"]["max"] for c in doc["categories"]]
    assert doc["image_auroc"]["max"] == pytest.approx(np.mean(per))
    assert doc["counts"]["train"] == 8
    assert "| score | brushed_metal | woven_fabric | mean |" in (out / "results.md").read_text()


# ----------------------------------------------------------------------------- the real detector


def _kernels_or_skip() -> None:
    from structcore import kernels

    try:
        x = np.zeros((2, 4), np.float32)
        kernels.knn(x, x, 1)
    except (ImportError, NotImplementedError, AttributeError) as exc:
        pytest.skip(f"the C++ kernels are not built or not implemented here ({exc})")


REAL = [
    "--backbone",
    "efficientnet_lite0",  # its weights install with the package: offline
    "--resize",
    "96",
    "--crop",
    "96",
    "--folds",
    "2",
    "--coreset-ratio",
    "0.2",
    "-q",
]


@pytest.mark.filterwarnings("ignore::structcore.calibration.CalibrationWarning")
def test_real_fit_predict_eval(tiny_mvtec: Path, tmp_path: Path) -> None:
    _kernels_or_skip()
    cat = tiny_mvtec / "ceramic_tiles"
    model = tmp_path / "m.npz"
    assert cli.main(["fit", str(cat / "train" / "good"), "-o", str(model), *REAL]) == 0
    out = tmp_path / "p.json"
    argv = ["predict", str(model), str(cat / "test"), "-r", "-o", str(out), "-q"]
    assert cli.main([*argv, "--overlays", str(tmp_path / "ov")]) == 0
    doc = json.loads(out.read_text())
    assert len(doc["images"]) == 6 and doc["threshold"] is not None
    assert all(isinstance(r["is_anomalous"], bool) for r in doc["images"])
    assert len(list((tmp_path / "ov").glob("*.png"))) == 6
    ev = tmp_path / "ev"
    argv = ["eval", "--format", "mvtec", "--root", str(tiny_mvtec), "--out", str(ev), *REAL]
    assert cli.main(argv) == 0
    m = json.loads((ev / "metrics.json").read_text())
    assert {"max", "structcore", "struct_only", "paper/l2/auto/crossfit"} <= set(m["image_auroc"])
    assert m["config"]["detector"]["backbone"] == "efficientnet_lite0"
    assert m["aupro"] is not None and m["pixel_auroc"] > 0.5


@pytest.mark.filterwarnings("ignore::structcore.calibration.CalibrationWarning")
def test_real_fit_predict_synthetic_calibration(tiny_mvtec: Path, tmp_path: Path) -> None:
    _kernels_or_skip()
    from structcore import Detector

    cat = tiny_mvtec / "ceramic_tiles"
    model = tmp_path / "m.npz"
    argv = ["fit", str(cat / "train" / "good"), "-o", str(model), *REAL]
    assert cli.main([*argv, "--calibration", "synthetic", "--crossfit-bank", "coreset"]) == 0
    det = Detector.load(model)
    assert det.calibration == "synthetic" and det.weights_.shape == (3,)
    assert det.crossfit_bank == "coreset" and det.lam == 0.0  # the default: max pooling
    out = tmp_path / "p.json"
    assert cli.main(["predict", str(model), str(cat / "test"), "-r", "-o", str(out), "-q"]) == 0
    doc = json.loads(out.read_text())
    assert doc["threshold"] == det.decision_threshold_ and len(doc["images"]) == 6


@pytest.mark.filterwarnings("ignore::structcore.calibration.CalibrationWarning")
def test_real_demo_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _kernels_or_skip()
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--categories", "woven_fabric", "--n-train", "6"]
    argv += ["--n-test-good", "3", "--n-test-defect", "1", *REAL]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| **structcore** |" in printed and "| paper/l2/auto/train |" in printed
    for name in (
        "metrics.json",
        "results.md",
        "woven_fabric/histograms.png",
        "woven_fabric/roc.png",
    ):
        assert (out / name).is_file(), name
