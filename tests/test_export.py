"""Export of the feature extractor (structcore.export): ONNX (run with onnxruntime) and
TorchScript give the same patch features as the PyTorch extractor, and through the C++ Scorer
the same scores as Detector.predict."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from structcore.detector import Detector
from structcore.export import _pool_indices, export_features, feature_module
from structcore.images import IMAGENET_MEAN, IMAGENET_STD, preprocess
from structcore.scorer import Scorer

torch = pytest.importorskip("torch")

#: features of unit scale: float32 reassociation in the exported graph stays far below this
ATOL = 1e-4


def _ort() -> Any:
    pytest.importorskip("onnx", reason="ONNX export needs the 'export' extra: pip install onnx")
    return pytest.importorskip(
        "onnxruntime", reason="the ONNX parity test needs onnxruntime (the 'export' extra)"
    )


def _images(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    imgs = rng.integers(90, 150, size=(n, 44, 52, 3), dtype=np.uint8)
    imgs[n // 2 :, 8:20, 10:22] = 240
    return imgs


@pytest.fixture(scope="module")
def detector() -> Detector:
    # dim 48 < C = 384 (ResNet-18 layer2 + layer3): the channel-pooling path is exported
    return Detector("resnet18", weights=None, dim=48, resize=40, crop=32, folds=2).fit(
        _images(0, 6)
    )


def _run_onnx(path: str | Path, x: np.ndarray) -> np.ndarray:
    ort = _ort()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"images": x})[0])


def test_pool_indices_match_adaptive_pooling() -> None:
    f = torch.nn.functional
    for c, d in [(384, 48), (1536, 1024), (10, 3), (7, 7), (5, 1), (3, 5)]:
        if d > c:
            continue
        x = torch.randn(6, c)
        ref = f.adaptive_avg_pool1d(x.unsqueeze(1), d).squeeze(1).numpy()
        idx, count = _pool_indices(c, d)
        padded = np.concatenate([x.numpy(), np.zeros((6, 1), np.float32)], axis=1)
        got = padded[:, idx].sum(axis=-1) / count
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_onnx_parity(detector: Detector, tmp_path: Path) -> None:
    _ort()
    out = export_features(detector, onnx_path=tmp_path / "f.onnx", batch_size=2)
    assert out.onnx_path is not None and out.torchscript_path is None
    assert out.input_shape == (2, 3, 32, 32) and out.output_shape == (2, 4, 4, 48)
    images = _images(1, 5)
    x = preprocess(list(images), detector.resize, detector.crop)
    ref = detector.extractor_(x)
    got = _run_onnx(out.onnx_path, x.numpy())  # batch 5: the batch axis is dynamic
    assert got.shape == ref.shape == (5, 4, 4, 48)
    np.testing.assert_allclose(got, ref, atol=ATOL, rtol=1e-4)

    # metadata for the C++ side: the weights hash ties the extractor to the model file
    import onnx

    meta = {p.key: p.value for p in onnx.load(out.onnx_path).metadata_props}
    assert meta["weights_sha256"] == detector.weights_sha256_
    assert meta["feature_grid"] == "4,4" and meta["feature_dim"] == "48"
    assert meta["crop"] == "32" and meta["resize"] == "40"
    assert meta["include_normalization"] == "false"

    # end to end: ONNX features -> C++ Scorer == Detector.predict
    model = tmp_path / "model.npz"
    detector.save(model)
    scores = Scorer(model).score_features(got)
    pred = detector.predict(images)
    np.testing.assert_allclose(scores.score, pred.score, rtol=1e-4)
    np.testing.assert_allclose(scores.maps, pred.maps, atol=ATOL)
    assert (scores.is_anomalous == pred.is_anomalous).mean() >= 0.8  # threshold ties aside


def test_onnx_with_normalization_and_no_pooling(tmp_path: Path) -> None:
    _ort()
    det = Detector("resnet18", weights=None, dim=4096, resize=32, crop=32, folds=2).fit(
        _images(2, 4)
    )  # dim >= C: no channel pooling
    out = export_features(det, tmp_path / "n.onnx", include_normalization=True)
    assert out.output_shape == (1, 4, 4, 384)
    x = preprocess(list(_images(3, 3)), det.resize, det.crop)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    raw = (x * std + mean).numpy()  # the [0, 1] crop the graph now takes
    np.testing.assert_allclose(_run_onnx(out.onnx_path, raw), det.extractor_(x), atol=ATOL)


def test_torchscript_parity(detector: Detector, tmp_path: Path) -> None:
    out = export_features(detector, torchscript_path=tmp_path / "f.pt")
    assert out.onnx_path is None and out.torchscript_path is not None
    x = preprocess(list(_images(4, 3)), detector.resize, detector.crop)
    extra = {"structcore.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in recent torch releases
        module = torch.jit.load(out.torchscript_path, _extra_files=extra)
    with torch.no_grad():
        got = module(x).numpy()
    np.testing.assert_allclose(got, detector.extractor_(x), atol=ATOL)
    assert b'"feature_dim": "48"' in extra["structcore.json"]


def test_export_from_saved_model_and_module(detector: Detector, tmp_path: Path) -> None:
    model = tmp_path / "m.npz"
    detector.save(model)
    out = export_features(str(model), torchscript_path=tmp_path / "g.pt")
    assert out.metadata["weights_sha256"] == detector.weights_sha256_
    module = feature_module(detector.extractor_, 48)
    x = preprocess(list(_images(5, 2)), detector.resize, detector.crop)
    with torch.no_grad():
        np.testing.assert_allclose(module(x).numpy(), detector.extractor_(x), atol=ATOL)


def test_export_arguments(detector: Detector, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="onnx_path and/or torchscript_path"):
        export_features(detector)
    with pytest.raises(TypeError, match="fitted Detector"):
        export_features(42, torchscript_path=tmp_path / "x.pt")
    with pytest.raises(ValueError, match="crop is required"):
        export_features(detector.extractor_, torchscript_path=tmp_path / "x.pt")
    with pytest.raises(ValueError, match="batch_size"):
        export_features(detector, torchscript_path=tmp_path / "x.pt", batch_size=0)
    unfitted = Detector("resnet18", weights=None)
    with pytest.raises(RuntimeError, match="fit"):
        export_features(unfitted, torchscript_path=tmp_path / "x.pt")


@pytest.mark.shared
@pytest.mark.slow
def test_onnx_mobilenet_v2_imagenet(
    torch_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The real-weights backbone of the demo, at its default crop."""
    _ort()
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    det = Detector("mobilenet_v2", resize=128, crop=112, coreset_ratio=0.2, folds=2).fit(
        _images(6, 4)
    )
    out = export_features(det, tmp_path / "mnv2.onnx")
    x = preprocess(list(_images(7, 2)), det.resize, det.crop)
    ref = det.extractor_(x)
    got = _run_onnx(out.onnx_path, x.numpy())
    np.testing.assert_allclose(got, ref, atol=ATOL * max(1.0, float(np.abs(ref).max())))


def test_cli_export(detector: Detector, tmp_path: Path) -> None:
    from structcore.cli import main

    model = tmp_path / "m.npz"
    detector.save(model)
    assert main(["export", str(model), "-q"]) == 2  # neither --onnx nor --torchscript
    assert main(["export", str(tmp_path / "missing.npz"), "--torchscript", "x.pt", "-q"]) == 2
    out = tmp_path / "f.pt"
    assert main(["export", str(model), "--torchscript", str(out), "-q"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
        module = torch.jit.load(str(out))
    x = preprocess(list(_images(7, 2)), detector.resize, detector.crop)
    with torch.no_grad():
        np.testing.assert_allclose(module(x).numpy(), detector.extractor_(x), atol=ATOL)


def test_bfloat16_backbone_is_not_exported(tmp_path: Path) -> None:
    # exported graphs are float32: a bfloat16 detector must not export mismatching features
    det = Detector(
        "resnet18", weights=None, dim=16, resize=32, crop=32, folds=2, backbone_precision="bfloat16"
    ).fit(_images(3, 4))
    with pytest.raises(ValueError, match="backbone_precision='float32'"):
        export_features(det, onnx_path=tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
