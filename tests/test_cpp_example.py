"""The C++ package end to end: build the library without Python, `cmake --install` it to a
temporary prefix, build examples/cpp against it with find_package(structcore), run both
example programs (C++ API and C ABI) on a model and features made here, and compare their
output with Detector.predict.

Needs cmake (>= 3.18) and a C++17 compiler with OpenMP; skipped with the reason when either
is missing. Building the library takes about a minute; set STRUCTCORE_CPP_PREFIX to an
existing install prefix (with lib/cmake/structcore) to skip that step.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from structcore.detector import Detector
from structcore.images import preprocess

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Built:
    prefix: Path
    score_features: Path  # C++ API example
    score_features_c: Path  # C ABI example


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
        )
    return proc


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not on PATH: the C++ package test needs cmake >= 3.18")
    compiler = os.environ.get("CXX") or next(
        (c for c in ("c++", "g++", "clang++") if shutil.which(c)), None
    )
    if compiler is None or shutil.which(compiler) is None:
        pytest.skip("no C++ compiler found (set CXX): the C++ package test needs a C++17 compiler")
    if not any(shutil.which(c) for c in (os.environ.get("CC", "cc"), "gcc", "clang")):
        pytest.skip("no C compiler found (set CC): the C example needs one")
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    work = tmp_path_factory.mktemp("cpp")
    given = os.environ.get("STRUCTCORE_CPP_PREFIX")
    if given:
        prefix = Path(given)
        if not (prefix / "lib" / "cmake" / "structcore").is_dir():
            pytest.fail(f"STRUCTCORE_CPP_PREFIX={given} holds no lib/cmake/structcore")
    else:
        prefix = work / "prefix"
        build = work / "build"
        _run(
            [
                cmake,
                "-S",
                str(ROOT),
                "-B",
                str(build),
                *gen,
                "-DSTRUCTCORE_PYTHON=OFF",
                "-DCMAKE_BUILD_TYPE=Release",
                f"-DCMAKE_INSTALL_PREFIX={prefix}",
            ]
        )
        _run([cmake, "--build", str(build), "--parallel", "2"])
        _run([cmake, "--install", str(build)])
    ex = work / "example"
    _run(
        [
            cmake,
            "-S",
            str(ROOT / "examples" / "cpp"),
            "-B",
            str(ex),
            *gen,
            f"-DCMAKE_PREFIX_PATH={prefix}",
            "-DCMAKE_BUILD_TYPE=Release",
        ]
    )
    _run([cmake, "--build", str(ex)])
    exe = ".exe" if os.name == "nt" else ""
    return Built(prefix, ex / f"score_features{exe}", ex / f"score_features_c{exe}")


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> tuple[Detector, Path, np.ndarray, object]:
    """A small fitted model (random-weight ResNet-18), features of test images, predictions."""
    rng = np.random.default_rng(0)
    train = rng.integers(90, 150, size=(6, 40, 40, 3), dtype=np.uint8)
    test = rng.integers(90, 150, size=(4, 40, 40, 3), dtype=np.uint8)
    test[2:, 5:15, 8:20] = 250
    det = Detector(
        "resnet18",
        weights=None,
        dim=40,
        resize=40,
        crop=32,
        folds=2,
        descriptor="extended",
        lam="auto",
    ).fit(train)
    folder = tmp_path_factory.mktemp("case")
    model = folder / "model.npz"
    det.save(model)
    feats = det.extractor_(preprocess(list(test), det.resize, det.crop))
    return det, model, feats, det.predict(test)


def test_installed_package_layout(built: Built) -> None:
    inc = built.prefix / "include" / "structcore"
    for header in ("scorer.hpp", "npy.hpp", "structcore.h", "knn.hpp", "common.hpp"):
        assert (inc / header).is_file(), header
    assert not list(inc.glob("*detail*")), "private headers must not be installed"
    cfg = built.prefix / "lib" / "cmake" / "structcore"
    assert (cfg / "structcoreConfig.cmake").is_file()
    assert (cfg / "structcoreConfigVersion.cmake").is_file()
    assert "structcore::core" in (cfg / "structcoreTargets.cmake").read_text()


def test_cpp_example_matches_predict(built: Built, case: tuple, tmp_path: Path) -> None:
    det, model, feats, pred = case
    np.save(tmp_path / "features.npy", feats)
    maps_path = tmp_path / "maps.npy"
    out = _run(
        [str(built.score_features), str(model), str(tmp_path / "features.npy"), str(maps_path)]
    )
    got = json.loads(out.stdout)
    assert got["n_images"] == 4 and got["backbone"] == "resnet18"
    for key in ("score_max", "score_struct", "score"):
        np.testing.assert_allclose(got[key], getattr(pred, key), rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(
        np.reshape(got["descriptor"], pred.descriptor.shape),
        pred.descriptor,
        rtol=1e-5,
        atol=1e-12,
    )
    assert got["is_anomalous"] == pred.is_anomalous.tolist()
    assert got["decision_threshold"] == det.decision_threshold_
    np.testing.assert_array_equal(np.load(maps_path), pred.maps)
    # (h, w, dim) float64 features: one image, converted
    np.save(tmp_path / "one.npy", feats[1].astype(np.float64))
    one = json.loads(
        _run([str(built.score_features), str(model), str(tmp_path / "one.npy")]).stdout
    )
    np.testing.assert_allclose(one["score"], pred.score[1:2], rtol=1e-5)


def test_c_example_matches_predict(built: Built, case: tuple, tmp_path: Path) -> None:
    _, model, feats, pred = case
    raw = tmp_path / "features.f32"
    feats.astype("<f4").tofile(raw)
    out = _run([str(built.score_features_c), str(model), str(raw)])
    rows = [line.split() for line in out.stdout.splitlines() if not line.startswith("#")]
    assert len(rows) == 4
    table = np.array([[float(v) for v in r] for r in rows])
    np.testing.assert_array_equal(table[:, 0], np.arange(4))
    np.testing.assert_allclose(table[:, 1], pred.score_max, rtol=1e-5)
    np.testing.assert_allclose(table[:, 2], pred.score_struct, rtol=1e-5)
    np.testing.assert_allclose(table[:, 3], pred.score, rtol=1e-5)
    np.testing.assert_array_equal(table[:, 4].astype(bool), pred.is_anomalous)


def test_examples_report_malformed_models(built: Built, case: tuple, tmp_path: Path) -> None:
    _, model, feats, _ = case
    np.save(tmp_path / "features.npy", feats)
    feats.astype("<f4").tofile(tmp_path / "features.f32")
    data = model.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    with np.load(model) as z:
        arrays = {n: z[n] for n in z.files}
    np.savez_compressed(tmp_path / "compressed.npz", **arrays)
    for name, expected in [
        ("truncated.npz", "end-of-central-directory"),
        ("compressed.npz", "compressed (method 8"),
        ("absent.npz", "cannot open"),
    ]:
        path = str(tmp_path / name)
        cpp = subprocess.run(
            [str(built.score_features), path, str(tmp_path / "features.npy")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cpp.returncode == 2 and expected in cpp.stderr, cpp.stderr
        c = subprocess.run(
            [str(built.score_features_c), path, str(tmp_path / "features.f32")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        code = "-3" if name == "absent.npz" else "-2"
        assert c.returncode == 2 and f"error {code}" in c.stderr and expected in c.stderr
    # features of the wrong grid: a clean argument error
    np.save(tmp_path / "wrong.npy", feats[:, :2])
    cpp = subprocess.run(
        [str(built.score_features), str(model), str(tmp_path / "wrong.npy")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cpp.returncode == 2 and "model expects" in cpp.stderr
