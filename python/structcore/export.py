"""Export of the patch-feature extractor to ONNX and TorchScript, for C++ inference.

The exported graph computes exactly what :class:`structcore.features.FeatureExtractor`
computes (METHOD.md §1.2): backbone stages up to the deepest selected layer, 3x3 local
averaging, bilinear upsampling to the first layer's grid, channel concatenation and the
adaptive average pooling of each patch vector to ``feature_dim`` values. Its output feeds
``structcore::Scorer`` (C++), ``structcore_scorer_score`` (C) or
:class:`structcore.scorer.Scorer`.

Input and output of the exported graph
--------------------------------------
* input ``images``: float32 tensor ``(B, 3, crop, crop)``, RGB, the output of
  :func:`structcore.images.preprocess`: each image converted to float RGB in ``[0, 1]``
  (8-bit values / 255, 16-bit / 65535), its shorter side resized to ``resize`` pixels
  (bilinear, antialiased, aspect ratio kept), the centre ``crop x crop`` square kept, then
  normalised per channel: ``(x - mean) / std`` with ImageNet's
  ``mean = (0.485, 0.456, 0.406)`` and ``std = (0.229, 0.224, 0.225)``.
  With ``include_normalization=True`` the graph does this last step itself and takes the
  ``[0, 1]`` RGB crop instead.
  ``B`` is dynamic (any batch size); ``crop`` is fixed at export (the detector's crop).
* output ``features``: float32 ``(B, h, w, feature_dim)``, channels last, the patch grid
  (``h = w = crop / 8`` for the default stride-8 layers: 28 x 28 at 224 px). This is the
  ``features`` argument of the scorers.

The ONNX file's ``metadata_props`` record ``structcore_version``, ``backbone``, ``layers``
(comma-separated), ``weights_sha256`` (compare it with the model file's), ``resize``,
``crop``, ``mean``, ``std``, ``include_normalization``, ``feature_grid`` and
``feature_dim``. The TorchScript file holds the same strings as extra files
(``structcore.json``).

Notes
-----
The channel pooling is written as gathers and a sum instead of
``torch.nn.functional.adaptive_avg_pool1d`` (which ONNX exporters refuse when the output
size does not divide the input size): bin ``i`` of ``C`` input channels covers
``[floor(i C / dim), ceil((i + 1) C / dim))``, as PyTorch's adaptive pooling. Results agree
with the PyTorch extractor to float32 rounding (about 1e-6 relative; the parity tests bound
it by 1e-4 absolute on features of unit scale).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .features import FeatureExtractor, aggregate_patches
from .images import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["ExportResult", "export_features", "feature_module"]


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_features` wrote.

    Attributes
    ----------
    onnx_path, torchscript_path : str or None
        The files written (None when not asked for).
    input_shape : tuple of int
        ``(B, 3, crop, crop)`` with ``B`` = the example batch size (dynamic in the files).
    output_shape : tuple of int
        ``(B, h, w, feature_dim)``.
    metadata : dict of str to str
        The strings stored with the files (module docstring).
    """

    onnx_path: str | None
    torchscript_path: str | None
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    metadata: dict[str, str] = field(default_factory=dict)


def _pool_indices(channels: int, out_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Gather indices (out_dim, L) into ``channels + 1`` columns (the last is zero padding)
    and the bin sizes (out_dim,) of PyTorch's adaptive average pooling."""
    starts = (np.arange(out_dim) * channels) // out_dim
    ends = -((-(np.arange(out_dim) + 1) * channels) // out_dim)  # ceil
    length = int((ends - starts).max())
    idx = np.full((out_dim, length), channels, dtype=np.int64)
    for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
        idx[i, : e - s] = np.arange(s, e)
    return idx, (ends - starts).astype(np.float32)


def feature_module(
    extractor: FeatureExtractor,
    feature_dim: int,
    *,
    include_normalization: bool = False,
) -> Any:
    """A ``torch.nn.Module`` computing ``extractor``'s patch features (for export).

    Parameters
    ----------
    extractor : FeatureExtractor
        The (frozen) extractor of a fitted detector.
    feature_dim : int
        The detector's ``feature_dim_`` (``min(dim, C)``).
    include_normalization : bool
        Normalise the ``[0, 1]`` RGB input inside the module (module docstring).

    Returns
    -------
    torch.nn.Module
        ``forward(images (B, 3, crop, crop) float32) -> (B, h, w, feature_dim) float32``.
    """
    import torch
    import torch.nn.functional as F

    stages = list(extractor._stages)
    layers = tuple(extractor.layers)

    class PatchFeatures(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.backbone = extractor._model  # registers the parameters
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
            self.pool_idx: Any = None
            self.pool_count: Any = None

        def forward(self, images: Any) -> Any:
            x = images
            if include_normalization:
                x = (x - self.mean) / self.std
            maps = []
            for name, stage in stages:
                x = stage(x)
                if name in layers:
                    maps.append(x)
            feats = aggregate_patches(maps).permute(0, 2, 3, 1)  # (B, h, w, C)
            c = feats.shape[-1]
            if feature_dim >= c:
                return feats.contiguous()
            if self.pool_idx is None:
                idx, count = _pool_indices(int(c), feature_dim)
                self.pool_idx = torch.from_numpy(idx).to(feats.device)
                self.pool_count = torch.from_numpy(count).to(feats.device)
            padded = F.pad(feats, (0, 1))  # a zero channel at index C
            gathered = padded[..., self.pool_idx]  # (B, h, w, feature_dim, L)
            return gathered.sum(dim=-1) / self.pool_count

    module = PatchFeatures().eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _check_float32(extractor: FeatureExtractor) -> None:
    """Exported graphs are float32: refuse a bfloat16 backbone rather than export features
    that differ from the ones the detector was fitted on."""
    if extractor.precision != "float32":
        raise ValueError(
            f"the backbone runs in {extractor.precision} (backbone_precision="
            f"{extractor.precision!r}); exported graphs are float32 and would not reproduce "
            "its features: fit with backbone_precision='float32' to export"
        )


def _resolve(model_or_detector: object) -> tuple[FeatureExtractor, dict[str, Any]]:
    """(extractor, settings) of a fitted Detector, a saved model path or a FeatureExtractor."""
    from .detector import Detector

    det: Any = model_or_detector
    if isinstance(det, (str, os.PathLike)):
        det = Detector.load(det)
    if isinstance(det, Detector):
        det._check_fitted()
        ex = det.extractor_
        _check_float32(ex)
        return ex, {
            "resize": int(det.resize),
            "crop": int(det.crop),
            "feature_dim": int(det.feature_dim_),
            "weights_sha256": str(det.weights_sha256_),
        }
    if isinstance(det, FeatureExtractor):
        _check_float32(det)
        return det, {
            "resize": None,
            "crop": None,
            "feature_dim": None,
            "weights_sha256": det.weights_sha256,
        }
    raise TypeError(
        "model_or_detector must be a fitted Detector, the path of a saved model or a "
        f"FeatureExtractor; got {type(model_or_detector).__name__}"
    )


def export_features(
    model_or_detector: object,
    onnx_path: str | os.PathLike[str] | None = None,
    torchscript_path: str | os.PathLike[str] | None = None,
    *,
    crop: int | None = None,
    batch_size: int = 1,
    include_normalization: bool = False,
    opset: int = 17,
) -> ExportResult:
    """Export the patch-feature extractor of a detector to ONNX and/or TorchScript.

    Parameters
    ----------
    model_or_detector : Detector, str / path-like or FeatureExtractor
        A fitted detector, the path of a file written by :meth:`Detector.save` (loaded with
        :meth:`Detector.load`, which needs its backbone weights), or a bare extractor (then
        ``crop`` is required).
    onnx_path : str or path-like, optional
        Where to write the ONNX model (opset ``opset``, dynamic batch axis).
    torchscript_path : str or path-like, optional
        Where to write the traced TorchScript module (``torch.jit.load`` in Python,
        ``torch::jit::load`` in LibTorch C++).
    crop : int, optional
        Input side in pixels (default: the detector's ``crop``).
    batch_size : int
        Batch size of the example input used for tracing (the files accept any batch).
    include_normalization : bool
        Whether the graph applies the ImageNet normalisation itself (input in ``[0, 1]``).
    opset : int
        ONNX opset version (>= 13).

    Returns
    -------
    ExportResult

    Raises
    ------
    ValueError
        Neither path given; bad ``crop`` / ``batch_size`` / ``opset``.
    TypeError
        ``model_or_detector`` of another type.
    ImportError
        ONNX export needs the ``onnx`` package (``pip install 'structcore[export]'``).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from structcore import Detector
    >>> rng = np.random.default_rng(0)
    >>> train = rng.integers(100, 140, size=(6, 40, 40, 3), dtype=np.uint8)
    >>> det = Detector("resnet18", weights=None, dim=32, resize=32, crop=32, folds=2).fit(train)
    >>> out = export_features(det, torchscript_path=os.path.join(tempfile.mkdtemp(), "f.pt"))
    >>> out.input_shape, out.output_shape
    ((1, 3, 32, 32), (1, 4, 4, 32))
    """
    import torch

    from . import __version__
    from ._validation import check_int

    if onnx_path is None and torchscript_path is None:
        raise ValueError("export_features: give onnx_path and/or torchscript_path")
    extractor, settings = _resolve(model_or_detector)
    side = settings["crop"] if crop is None else check_int(crop, "crop", low=8, high=16384)
    if side is None:
        raise ValueError("crop is required when exporting a bare FeatureExtractor")
    bs = check_int(batch_size, "batch_size", low=1, high=1024)
    opset = check_int(opset, "opset", low=13)

    example = torch.zeros((bs, 3, side, side), dtype=torch.float32, device=extractor.device)
    feature_dim = int(extractor(example).shape[-1])  # min(dim, C)
    module = feature_module(extractor, feature_dim, include_normalization=include_normalization)
    module.to(extractor.device)
    with torch.no_grad():
        out_shape = tuple(int(s) for s in module(example).shape)
    metadata = {
        "structcore_version": str(__version__),
        "backbone": extractor.backbone,
        "layers": ",".join(extractor.layers),
        "weights_sha256": str(settings["weights_sha256"]),
        "resize": "" if settings["resize"] is None else str(settings["resize"]),
        "crop": str(side),
        "mean": ",".join(repr(v) for v in IMAGENET_MEAN),
        "std": ",".join(repr(v) for v in IMAGENET_STD),
        "include_normalization": str(bool(include_normalization)).lower(),
        "feature_grid": f"{out_shape[1]},{out_shape[2]}",
        "feature_dim": str(out_shape[3]),
        "input": "images: float32 (B, 3, crop, crop) RGB "
        + ("in [0, 1]" if include_normalization else "ImageNet-normalised"),
        "output": "features: float32 (B, h, w, feature_dim)",
    }

    onnx_out = None
    if onnx_path is not None:
        try:
            import onnx
        except ImportError as exc:
            raise ImportError(
                "ONNX export needs the onnx package: pip install 'structcore[export]' "
                "(onnx, onnxruntime)"
            ) from exc
        onnx_out = os.fspath(onnx_path)
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript-based exporter (dynamo=False) needs no onnxscript; torch marks
            # it deprecated, and tracing warns about shape-dependent Python control flow
            # (the shapes are fixed at export, as documented).
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                onnx_out,
                input_names=["images"],
                output_names=["features"],
                dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                opset_version=opset,
                dynamo=False,
                do_constant_folding=True,
            )
        proto = onnx.load(onnx_out)
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name = "structcore"
        onnx.checker.check_model(proto)
        onnx.save(proto, onnx_out)

    ts_out = None
    if torchscript_path is not None:
        ts_out = os.fspath(torchscript_path)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module, (example,), check_trace=False)
            torch.jit.save(traced, ts_out, _extra_files={"structcore.json": json.dumps(metadata)})

    return ExportResult(onnx_out, ts_out, tuple(example.shape), out_shape, metadata)
