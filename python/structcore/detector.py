"""The detector: PatchCore memory bank + StructCore image score, scikit-learn style.

``Detector(...).fit(train_good_images)`` then ``predict(images) -> Prediction``. METHOD.md is
the specification; this module wires :mod:`structcore.images`, :mod:`structcore.features`,
:mod:`structcore.memory_bank` and :mod:`structcore.calibration` together.

Fitting (all fitted state ends in ``_``; ``fit`` starts from scratch every time):

1. Patch features of every train image (``extractor_``); the bank ``bank_`` is a coreset of
   all train patches (``coreset_ratio``, ``projection_dim``, ``seed``).
2. Calibration maps of the train images (METHOD.md §3.5), for each *mode* that is needed:

   * ``"crossfit"``: the images are split into ``folds`` seeded folds
     (``numpy.random.default_rng(seed).permutation``, ``numpy.array_split``); for each fold a
     bank is built from the other folds' patches (same coreset ratio and seed) and scores the
     held-out fold. These banks serve calibration only; the final bank uses all images.
   * ``"train"``: the train images scored against the final bank (the paper's plain mode;
     biased low, one kNN pass).

   The configured ``calibration`` is always computed; with ``variants=True`` (default) both
   are, so :meth:`Detector.variant_scores` can re-calibrate every variant without refitting.
3. Per mode: pixel threshold ``t`` = ``pixel_quantile`` quantile of all calibration-map pixels
   (used by thresholded descriptor components); descriptors of *all* extended components
   (``train_phi_[mode]``, plus any configured component outside that set) and max scores
   (``train_max_[mode]``, reweighted when ``reweight=True``).
4. :class:`~structcore.calibration.StructCalibrator` on the configured mode and components:
   ``mu_``, ``sigma_`` (zero-variance components floored, with a
   :class:`~structcore.calibration.CalibrationWarning` naming them), ``lambda_`` (``"auto"``:
   ``std(max S) / std(D)`` over the calibration maps) and ``decision_threshold_`` (the
   ``threshold_quantile`` quantile of the scores ``max + lambda * D`` of the *cross-fitted*
   maps whenever they are computed, else of the configured mode's maps: same-train maps are
   biased low, and a threshold taken on them flags nearly every new image).

Prediction: features -> kNN against ``bank_`` -> maps S (``crop x crop``, Gaussian ``sigma``
in pixels) -> ``score_max`` = max(S) (times PatchCore's reweighting factor when
``reweight=True``, see :mod:`structcore.memory_bank`) -> descriptor ``phi(S)`` (pixel
threshold of the configured mode) -> ``z``, ``D`` -> ``score = score_max + lambda_ * D``;
``is_anomalous = score > decision_threshold_``.

The same pieces, public, for features cached outside the detector (e.g. an accuracy study of
image scores, :mod:`structcore.ablation`): :meth:`Detector.features` (patch features of
images, also before ``fit``), :meth:`Detector.fit_features` (``fit`` from features, optionally
with a given bank), :meth:`Detector.anomaly_maps` (maps and max scores of features, as
``predict``), :meth:`Detector.calibration_maps` (step 2's maps of either mode) and
:meth:`Detector.crossfit_folds`. They compute exactly what ``fit`` and ``predict`` do.

Variant grid of :meth:`Detector.variant_scores` (all from the same maps and max scores):

* ``"max"``, ``"structcore"`` (the configured score), ``"struct_only"`` (the configured D);
* ``"{descriptor}/{norm}/{lam}/{mode}"``: the hybrid score for descriptor in
  (``paper``, ``extended``), norm in (``l2``, ``linf``), lam in (``auto``, ``0.05``), mode in
  the fitted calibration modes, e.g. ``"paper/l2/auto/crossfit"``;
* ``"struct/{descriptor}/{norm}/{mode}"``: D alone for the same grid.

Grid variants are calibrated silently (no CalibrationWarning); the configured one warns in
``fit``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from . import memory_bank as mb
from ._validation import (
    as_float_array,
    check_choice,
    check_int,
    check_positive_float,
    check_quantile,
    check_threads,
)
from .calibration import CalibrationWarning, StructCalibrator, check_lam
from .features import BACKBONES, PRECISIONS, FeatureExtractor
from .images import as_image_list, iter_batches, preprocess, preprocess_one

__all__ = ["CALIBRATION_MODES", "GRID_LAMBDA", "Detector", "NotFittedError", "Prediction"]

#: Calibration modes (METHOD.md §3.5).
CALIBRATION_MODES = ("crossfit", "train")
#: The fixed lambda of the variant grid (the author's configs).
GRID_LAMBDA = 0.05
_PAPER_FALLBACK = ("std", "top_mean", "tv")


class NotFittedError(RuntimeError):
    """The detector is used before :meth:`Detector.fit` (or :meth:`Detector.load`)."""


def _component_sets() -> tuple[tuple[str, ...], tuple[str, ...], dict[str, str]]:
    """(paper components, extended components, registry) from the describe kernel module."""
    mod = importlib.import_module("structcore.kernels.describe")
    registry = dict(getattr(mod, "DESCRIPTOR_COMPONENTS", {}))
    paper = tuple(getattr(mod, "PAPER_COMPONENTS", _PAPER_FALLBACK))
    extended = tuple(getattr(mod, "EXTENDED_COMPONENTS", tuple(registry) or paper))
    return paper, extended, registry


@dataclass(frozen=True)
class Prediction:
    """What :meth:`Detector.predict` returns, one row per image.

    Attributes
    ----------
    maps : ndarray of shape (B, crop, crop), float32
        Anomaly maps S (pixel-level localisation; aligned with the centre crop).
    score_max : ndarray of shape (B,), float64
        max(S), times PatchCore's reweighting factor when the detector has ``reweight=True``.
    score_struct : ndarray of shape (B,), float64
        The structural distance D alone ("struct-only").
    score : ndarray of shape (B,), float64
        The StructCore score ``score_max + lambda_ * D``.
    descriptor : ndarray of shape (B, n_components), float64
        phi(S), in the order of :attr:`Detector.components_`.
    z : ndarray of shape (B, n_components), float64
        ``(phi - mu_) / sigma_``.
    is_anomalous : ndarray of shape (B,), bool
        ``score > decision_threshold_``.
    timings : dict of str to float
        Seconds spent per stage (``preprocess``, ``features``, ``knn``, ``map``,
        ``descriptor``, ``calibration``) over the whole call.
    valid : ndarray of shape (B,), bool
        True for the images that were scored. All True unless ``predict(...,
        errors="skip")`` met images it could not read; a failed image has NaN ``maps``,
        ``score_max``, ``score_struct``, ``score``, ``descriptor`` and ``z`` and
        ``is_anomalous`` False, so check ``valid`` (or :attr:`errors`) before trusting a
        decision.
    errors : dict of int to str
        Index in the batch -> ``"ExceptionType: message"`` of each image that failed (empty
        when every image was scored).
    """

    maps: np.ndarray
    score_max: np.ndarray
    score_struct: np.ndarray
    score: np.ndarray
    descriptor: np.ndarray
    z: np.ndarray
    is_anomalous: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    valid: np.ndarray = None  # type: ignore[assignment]  # filled in __post_init__
    errors: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.valid is None:
            object.__setattr__(self, "valid", np.ones(self.score.shape[0], dtype=bool))

    def __len__(self) -> int:
        return int(self.score.shape[0])

    @property
    def n_failed(self) -> int:
        """Number of images that could not be scored (``len(errors)``)."""
        return len(self.errors)


def _fold_parts(n: int, folds: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The seeded permutation of ``n`` train images and its ``folds`` held-out parts."""
    perm = np.random.default_rng(seed).permutation(n)
    return perm, np.array_split(perm, folds)


def _progress(iterable: Iterable[Any], enabled: bool, total: int, desc: str) -> Iterable[Any]:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="batch", leave=False)


class Detector:
    """Memory-bank anomaly detector with the StructCore image score.

    Parameters
    ----------
    backbone : str
        One of :data:`structcore.features.BACKBONES` (``wide_resnet50_2``, ``resnet18``,
        ``mobilenet_v2``, ``efficientnet_lite0``, ``efficientnet_lite2``).
    layers : sequence of str or None
        Backbone layers (None: the backbone's defaults; see :mod:`structcore.features`).
    weights : "default", str path or None
        Backbone weights: torchvision's/the package's ImageNet weights, a local state dict,
        or random initialisation.
    dim : int
        Upper bound on the patch feature dimension (channel pooling; METHOD.md §1.2).
    resize, crop : int
        Preprocessing: shorter side resized to ``resize`` px, centre crop ``crop`` px.
    coreset_ratio : float in (0, 1]
        Fraction of train patches kept in the bank.
    projection_dim : int or None
        Dimension of the coreset's random projection (None: none).
    k : int
        Nearest neighbours averaged into a patch score.
    sigma : float
        Gaussian blur of the maps, in pixels of the crop.
    descriptor : "paper", "extended" or sequence of str
        StructCore descriptor components: ``"paper"`` = ``PAPER_COMPONENTS`` (std, top_mean,
        tv), ``"extended"`` = ``EXTENDED_COMPONENTS`` (every named component), or names of
        :data:`structcore.DESCRIPTOR_COMPONENTS` (quantiles ``"q95"``, ``"q:0.995"`` too).
    norm : {"l2", "linf"}
        Norm of the z-vector.
    lam : "auto" or float >= 0
        Weight of D in the score.
    calibration : {"crossfit", "train"}
        Which train-good maps give mu, sigma and lambda (module docstring). Default
        ``"train"``, the paper's own mode: on the real sets of docs/ABLATION.md it ranks
        images better than cross-fitting (image AUROC vs max pooling: mean +0.007, worst
        -0.001 over 18 set/backbone pairs; cross-fitted: mean -0.022, worst -0.117). The
        decision threshold comes from the cross-fitted maps whenever they are computed.
    folds : int >= 2
        Cross-fitting folds.
    threshold_quantile : float in (0, 1]
        Quantile of calibration scores used as the decision threshold.
    pixel_quantile : float in (0, 1]
        Quantile of calibration-map pixels used as threshold ``t`` of thresholded components.
    reweight : bool
        PatchCore's neighbourhood-density reweighting of the max score.
    seed : int
        Seed of the coreset, the folds and a random backbone initialisation.
    device : str
        Torch device of the backbone (``"cpu"``, ``"cuda"``).
    backbone_precision : {"float32", "bfloat16"}
        Arithmetic of the backbone's convolutions (:data:`structcore.features.PRECISIONS`).
        ``"bfloat16"`` (torch autocast) runs them about 2x faster on CPUs with AVX-512 BF16
        and on GPUs (measured: WideResNet-50-2 49 vs 105 ms per image, MobileNetV2 4.3 vs
        9.0, 2 threads of an AMD EPYC Zen 4) at a small cost in accuracy (docs/RESULTS.md);
        on CPUs without bfloat16 units it is slower. Features, maps and scores stay float32.
        Exported graphs (:mod:`structcore.export`) are float32 only.
    batch_size : int
        Images per backbone batch.
    backend : {"cpp", "reference"}
        Kernels: :mod:`structcore.kernels` (C++) or :mod:`structcore.reference` (NumPy).
    threads : int or None
        Thread cap of the C++ kernels (None: all OpenMP threads).
    progress : bool
        Show tqdm progress bars.
    variants : bool
        Compute both calibration modes in ``fit`` so :meth:`variant_scores` has the whole grid
        (with ``calibration="train"`` this is what makes ``fit`` run the cross-fit).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> train = rng.integers(100, 140, size=(6, 40, 40, 3), dtype=np.uint8)
    >>> det = Detector("resnet18", weights=None, dim=32, resize=32, crop=32, folds=2)
    >>> pred = det.fit(train).predict(train[:2])
    >>> pred.maps.shape, pred.score.shape
    ((2, 32, 32), (2,))
    """

    def __init__(
        self,
        backbone: str = "wide_resnet50_2",
        layers: Sequence[str] | None = None,
        weights: str | os.PathLike[str] | None = "default",
        dim: int = 1024,
        resize: int = 256,
        crop: int = 224,
        coreset_ratio: float = 0.1,
        projection_dim: int | None = 128,
        k: int = 1,
        sigma: float = 4.0,
        descriptor: str | Sequence[str] = "paper",
        norm: str = "l2",
        lam: str | float = "auto",
        calibration: str = "train",
        folds: int = 5,
        threshold_quantile: float = 0.99,
        pixel_quantile: float = 0.999,
        reweight: bool = False,
        seed: int = 0,
        device: str = "cpu",
        backbone_precision: str = "float32",
        batch_size: int = 16,
        backend: str = "cpp",
        threads: int | None = None,
        progress: bool = False,
        variants: bool = True,
    ) -> None:
        self.backbone = backbone
        self.layers = layers
        self.weights = weights
        self.dim = dim
        self.resize = resize
        self.crop = crop
        self.coreset_ratio = coreset_ratio
        self.projection_dim = projection_dim
        self.k = k
        self.sigma = sigma
        self.descriptor = descriptor
        self.norm = norm
        self.lam = lam
        self.calibration = calibration
        self.folds = folds
        self.threshold_quantile = threshold_quantile
        self.pixel_quantile = pixel_quantile
        self.reweight = reweight
        self.seed = seed
        self.device = device
        self.backbone_precision = backbone_precision
        self.batch_size = batch_size
        self.backend = backend
        self.threads = threads
        self.progress = progress
        self.variants = variants

    # ---------------------------------------------------------------------------------------
    # scikit-learn style parameter access

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters as a dict (scikit-learn convention)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Detector:
        """Set constructor parameters; takes effect at the next :meth:`fit`."""
        valid = set(self._param_names())
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r}; valid: {sorted(valid)}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {
            n: p.default for n, p in inspect.signature(type(self).__init__).parameters.items()
        }
        changed = [
            f"{n}={v!r}" for n, v in self.get_params().items() if not _same(v, defaults.get(n))
        ]
        return f"Detector({', '.join(changed)})"

    # ---------------------------------------------------------------------------------------
    # validation

    def _validated(self) -> dict[str, Any]:
        """Check every constructor parameter; return the normalised values."""
        p: dict[str, Any] = {}
        if not isinstance(self.backbone, str) or self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {sorted(BACKBONES)}; got {self.backbone!r}")
        p["dim"] = check_int(self.dim, "dim", low=1)
        p["resize"] = check_int(self.resize, "resize", low=1, high=16384)
        p["crop"] = check_int(self.crop, "crop", low=1, high=16384)
        if p["crop"] > p["resize"]:
            raise ValueError(f"crop must be <= resize; got crop={self.crop}, resize={self.resize}")
        r = check_positive_float(self.coreset_ratio, "coreset_ratio")
        if r > 1.0:
            raise ValueError(f"coreset_ratio must be in (0, 1]; got {self.coreset_ratio!r}")
        p["coreset_ratio"] = r
        p["projection_dim"] = (
            None
            if self.projection_dim is None
            else check_int(self.projection_dim, "projection_dim", low=1)
        )
        p["k"] = check_int(self.k, "k", low=1)
        p["sigma"] = check_positive_float(self.sigma, "sigma", allow_zero=True)
        p["components"] = self._resolve_descriptor(self.descriptor)
        p["norm"] = check_choice(self.norm, "norm", ("l2", "linf"))
        check_lam(self.lam)
        p["calibration"] = check_choice(self.calibration, "calibration", CALIBRATION_MODES)
        p["folds"] = check_int(self.folds, "folds", low=2)
        for name in ("threshold_quantile", "pixel_quantile"):
            check_quantile(getattr(self, name), name)
        for name in ("reweight", "progress", "variants"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False; got {getattr(self, name)!r}")
        p["seed"] = check_int(self.seed, "seed", low=0, high=2**63 - 1)
        p["backbone_precision"] = check_choice(
            self.backbone_precision, "backbone_precision", PRECISIONS
        )
        p["batch_size"] = check_int(self.batch_size, "batch_size", low=1)
        check_choice(self.backend, "backend", ("cpp", "reference"))
        check_threads(self.threads)
        return p

    @staticmethod
    def _resolve_descriptor(descriptor: object) -> tuple[str, ...]:
        paper, extended, registry = _component_sets()
        if isinstance(descriptor, str):
            if descriptor == "paper":
                return paper
            if descriptor == "extended":
                return extended
            raise ValueError(
                f"descriptor must be 'paper', 'extended' or a list of component names; "
                f"got {descriptor!r}"
            )
        try:
            names = tuple(descriptor)  # type: ignore[call-overload]
        except TypeError:
            raise TypeError(
                f"descriptor must be 'paper', 'extended' or a list of names; got {descriptor!r}"
            ) from None
        if not names:
            raise ValueError("descriptor must name at least one component; got an empty list")
        from ._components import parse_components

        for n in names:
            if not isinstance(n, str):
                raise TypeError(f"descriptor: component names must be str; got {n!r}")
            try:
                parse_components((n,))
            except ValueError:
                raise ValueError(
                    f"descriptor: unknown component {n!r}; choose from {sorted(registry)} "
                    "or a quantile 'q<percent>' / 'q:<fraction>'"
                ) from None
        if len(set(names)) != len(names):
            raise ValueError(f"descriptor must not repeat a component; got {list(names)}")
        return names

    def _check_fitted(self) -> None:
        if not hasattr(self, "bank_"):
            raise NotFittedError(
                "this Detector is not fitted yet; call fit(images) or Detector.load(path) first"
            )

    def _reset(self) -> None:
        for name in list(vars(self)):
            if name.endswith("_") and not name.startswith("__"):
                delattr(self, name)

    # ---------------------------------------------------------------------------------------
    # pipeline pieces

    def _new_extractor(self, p: dict[str, Any]) -> FeatureExtractor:
        """The backbone of the (validated) parameters ``p``, as :meth:`fit` builds it."""
        return FeatureExtractor(
            self.backbone,
            self.layers,
            self.weights,
            p["dim"],
            self.device,
            p["seed"],
            p["backbone_precision"],
        )

    def _features(
        self,
        extractor: FeatureExtractor,
        items: list[object],
        batch_size: int,
        timings: dict[str, float] | None = None,
    ) -> np.ndarray:
        """Patch features of all ``items``: (N, h, w, feature_dim) float32."""
        out: list[np.ndarray] = []
        batches = iter_batches(items, batch_size)
        total = (len(items) + batch_size - 1) // batch_size
        for batch in _progress(batches, bool(self.progress), total, "features"):
            t0 = time.perf_counter()
            x = preprocess(batch, self.resize, self.crop)
            t1 = time.perf_counter()
            out.append(extractor(x))
            if timings is not None:
                timings["preprocess"] += t1 - t0
                timings["features"] += time.perf_counter() - t1
        return np.concatenate(out, axis=0)

    def _score(
        self,
        feats: np.ndarray,
        bank: np.ndarray,
        backend: ModuleType,
        timings: dict[str, float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Maps (B, crop, crop) float32 and max scores (B,) float64 of feature grids."""
        t0 = time.perf_counter()
        scores, nearest = mb.patch_scores(
            feats, bank, self.k, backend=backend, threads=self.threads
        )
        t1 = time.perf_counter()
        maps = mb.score_maps(
            scores, int(self.crop), float(self.sigma), backend=backend, threads=self.threads
        )
        smax = maps.reshape(maps.shape[0], -1).max(axis=1).astype(np.float64)
        if self.reweight:
            smax = smax * mb.reweight_factors(
                feats, scores, nearest, bank, backend=backend, threads=self.threads
            )
        if timings is not None:
            timings["knn"] += t1 - t0
            timings["map"] += time.perf_counter() - t1
        return maps, smax

    def _describe(
        self,
        maps: np.ndarray,
        components: Sequence[str],
        threshold: float,
        backend: ModuleType,
    ) -> np.ndarray:
        phi = backend.describe(
            maps, tuple(components), threshold=float(threshold), threads=self.threads
        )
        return np.asarray(phi, dtype=np.float64)

    def _calibration_maps(
        self, mode: str, feats: np.ndarray, p: dict[str, Any], backend: ModuleType
    ) -> tuple[np.ndarray, np.ndarray]:
        """Calibration maps (N, crop, crop) and max scores (N,) of the train images."""
        n = feats.shape[0]
        d = feats.shape[-1]
        if mode == "train":
            return self._score(feats, self.bank_, backend)
        maps = np.empty((n, p["crop"], p["crop"]), dtype=np.float32)
        smax = np.empty(n, dtype=np.float64)
        perm, parts = _fold_parts(n, p["folds"], p["seed"])
        for held in _progress(parts, bool(self.progress), len(parts), "cross-fit"):
            rest = np.setdiff1d(perm, held)
            bank = mb.build_bank(
                feats[rest].reshape(-1, d),
                p["coreset_ratio"],
                projection_dim=p["projection_dim"],
                seed=p["seed"],
                backend=backend,
                threads=self.threads,
            )
            if p["k"] > bank.shape[0]:
                raise ValueError(
                    f"k={p['k']} exceeds the {bank.shape[0]} vectors of a cross-fit bank; "
                    "lower k, raise coreset_ratio or use fewer folds"
                )
            for chunk in iter_batches(list(held), p["batch_size"]):
                idx = np.asarray(chunk, dtype=np.int64)
                maps[idx], smax[idx] = self._score(feats[idx], bank, backend)
        return maps, smax

    # ---------------------------------------------------------------------------------------
    # public API

    def fit(self, images: object) -> Detector:
        """Fit the bank and the StructCore calibration on defect-free images.

        Parameters
        ----------
        images : image, sequence of images, ndarray (N, H, W, C) or tensor (N, C, H, W)
            Train-good images (paths, PIL images, uint8/uint16/float arrays, tensors;
            see :mod:`structcore.images`). At least 2, and at least ``folds`` when cross-fit
            calibration runs.

        Returns
        -------
        self : Detector

        Warns
        -----
        CalibrationWarning
            A configured descriptor component has zero variance on the calibration maps.
        """
        p = self._validated()
        self._reset()
        backend = mb.backend_module(self.backend)
        items = as_image_list(images)
        modes = self._fit_modes(len(items), p, "images")
        timings = dict.fromkeys(("preprocess", "features", "bank", "calibration"), 0.0)
        self.extractor_ = self._new_extractor(p)
        feats = self._features(self.extractor_, items, p["batch_size"], timings)
        return self._fit_on_features(feats, None, p, modes, backend, timings)

    def _fit_modes(self, n: int, p: dict[str, Any], name: str) -> tuple[str, ...]:
        """The calibration modes ``fit`` computes for ``n`` train images (checks ``n``)."""
        if n < 2:
            raise ValueError(f"{name}: fit needs at least 2 train images; got {n}")
        modes = (
            CALIBRATION_MODES
            if self.variants
            else tuple(m for m in CALIBRATION_MODES if m == p["calibration"])
        )
        if "crossfit" in modes and p["folds"] > n:
            raise ValueError(
                f"folds={p['folds']} exceeds the {n} train images; cross-fitting needs at least "
                "one image per fold (lower folds, or calibration='train' with variants=False)"
            )
        return modes

    def _fit_on_features(
        self,
        feats: np.ndarray,
        bank: np.ndarray | None,
        p: dict[str, Any],
        modes: tuple[str, ...],
        backend: ModuleType,
        timings: dict[str, float],
    ) -> Detector:
        """Steps 1 (bank) to 4 of the module docstring; ``extractor_`` is already set."""
        n, h, w, d = feats.shape
        t0 = time.perf_counter()
        if bank is None:
            bank = mb.build_bank(
                feats.reshape(-1, d),
                p["coreset_ratio"],
                projection_dim=p["projection_dim"],
                seed=p["seed"],
                backend=backend,
                threads=self.threads,
            )
        self.bank_ = bank
        if p["k"] > self.bank_.shape[0]:
            raise ValueError(f"k={p['k']} exceeds the {self.bank_.shape[0]} bank vectors")
        t1 = time.perf_counter()
        timings["bank"] = t1 - t0

        paper, extended, _ = _component_sets()
        self.components_ = p["components"]
        self.stored_components_ = tuple(extended) + tuple(
            c for c in dict.fromkeys(paper + self.components_) if c not in extended
        )
        self.calibration_modes_ = modes
        self.pixel_thresholds_: dict[str, float] = {}
        self.train_phi_: dict[str, np.ndarray] = {}
        self.train_max_: dict[str, np.ndarray] = {}
        for mode in modes:
            maps, smax = self._calibration_maps(mode, feats, p, backend)
            t = float(np.quantile(maps, float(self.pixel_quantile)))
            self.pixel_thresholds_[mode] = t
            self.train_phi_[mode] = self._describe(maps, self.stored_components_, t, backend)
            self.train_max_[mode] = smax
            del maps
        timings["calibration"] = time.perf_counter() - t1

        self.feature_grid_ = (int(h), int(w))
        self.feature_dim_ = int(d)
        self.n_train_ = int(n)
        self.weights_sha256_ = self.extractor_.weights_sha256
        self._fit_calibrator(warn=True)
        self.fit_timings_ = timings
        return self

    def _fit_calibrator(self, warn: bool) -> None:
        mode = str(self.calibration)
        cols = [self.stored_components_.index(c) for c in self.components_]
        cal = StructCalibrator(self.norm, self.lam, self.threshold_quantile, names=self.components_)
        with warnings.catch_warnings():
            if not warn:
                warnings.simplefilter("ignore", CalibrationWarning)
            cal.fit(self.train_phi_[mode][:, cols], self.train_max_[mode])
        # Same-train maps are biased low (their images are in the bank): a threshold taken on
        # them flags nearly every new image. Use the cross-fitted maps whenever they exist.
        tmode = "crossfit" if "crossfit" in self.calibration_modes_ else mode
        if tmode != mode:
            scores = cal.score(self.train_phi_[tmode][:, cols], self.train_max_[tmode])
            cal.decision_threshold_ = float(np.quantile(scores, float(self.threshold_quantile)))
        self.calibrator_ = cal
        self.pixel_threshold_ = self.pixel_thresholds_[mode]
        self.mu_ = cal.mu_
        self.sigma_ = cal.sigma_
        self.lambda_ = cal.lambda_
        self.decision_threshold_ = cal.decision_threshold_

    def predict(
        self, images: object, batch_size: int | None = None, *, errors: str = "raise"
    ) -> Prediction:
        """Score images: maps, max, StructCore scores and decisions.

        Parameters
        ----------
        images : image, sequence of images, ndarray (B, H, W, C) or tensor (B, C, H, W)
            Any number of images of any supported kind and size.
        batch_size : int or None
            Images per backbone batch (None: the detector's ``batch_size``).
        errors : {"raise", "skip"}
            What an image that cannot be read or converted does (missing, unreadable or
            truncated file, unsupported dtype or layout, NaN or out-of-range values, above
            :data:`structcore.images.MAX_IMAGE_PIXELS`): ``"raise"`` (default) raises its
            error (``FileNotFoundError``, ``ValueError``, ``TypeError`` or ``MemoryError``,
            naming the image); ``"skip"`` records it in :attr:`Prediction.errors`, marks it
            invalid in :attr:`Prediction.valid`, gives it NaN scores and scores every other
            image of the call exactly as ``"raise"`` would have. Problems of the call itself
            (an empty batch, a bad ``batch_size``, an unfitted detector) always raise.

        Returns
        -------
        prediction : Prediction
            One row per input image, in input order (failed ones included).
        """
        self._check_fitted()
        check_choice(errors, "errors", ("raise", "skip"))
        skip = errors == "skip"
        bs = self.batch_size if batch_size is None else batch_size
        bs = check_int(bs, "batch_size", low=1)
        backend = mb.backend_module(self.backend)
        items = as_image_list(images)
        n = len(items)
        timings = dict.fromkeys(
            ("preprocess", "features", "knn", "map", "descriptor", "calibration"), 0.0
        )
        crop = int(self.crop)
        n_comp = len(self.components_)
        maps = np.full((n, crop, crop), np.nan, dtype=np.float32)
        smax = np.full(n, np.nan, dtype=np.float64)
        phi = np.full((n, n_comp), np.nan, dtype=np.float64)
        valid = np.zeros(n, dtype=bool)
        failed: dict[int, str] = {}
        total = (n + bs - 1) // bs
        starts = range(0, n, bs)
        for start in _progress(starts, bool(self.progress), total, "predict"):
            batch = items[start : start + bs]
            t0 = time.perf_counter()
            if skip:
                x, ok = self._preprocess_skipping(batch, start, failed)
            else:
                x = preprocess(batch, self.resize, self.crop, offset=start)
                ok = np.arange(start, start + len(batch))
            t1 = time.perf_counter()
            timings["preprocess"] += t1 - t0
            if ok.size == 0:
                continue
            feats = self.extractor_(x)
            timings["features"] += time.perf_counter() - t1
            bmaps, bmax = self._score(feats, self.bank_, backend, timings)
            t2 = time.perf_counter()
            phi[ok] = self._describe(bmaps, self.components_, self.pixel_threshold_, backend)
            timings["descriptor"] += time.perf_counter() - t2
            maps[ok] = bmaps
            smax[ok] = bmax
            valid[ok] = True
        t3 = time.perf_counter()
        if valid.all():
            z, dist, score = self.calibrator_.transform(phi, smax)
            decision = self.calibrator_.decide(score)
        else:
            z = np.full((n, n_comp), np.nan, dtype=np.float64)
            dist = np.full(n, np.nan, dtype=np.float64)
            score = np.full(n, np.nan, dtype=np.float64)
            decision = np.zeros(n, dtype=bool)
            if valid.any():
                zv, dv, sv = self.calibrator_.transform(phi[valid], smax[valid])
                z[valid], dist[valid], score[valid] = zv, dv, sv
                decision[valid] = self.calibrator_.decide(sv)
        timings["calibration"] = time.perf_counter() - t3
        return Prediction(
            maps, smax, dist, score, phi, z, decision, timings, valid=valid, errors=failed
        )

    def _preprocess_skipping(
        self, batch: list[object], start: int, failed: dict[int, str]
    ) -> tuple[Any, np.ndarray]:
        """Preprocess what can be; record the others in ``failed``; (tensor, global indices)."""
        import torch

        tensors: list[Any] = []
        ok: list[int] = []
        for i, item in enumerate(batch):
            idx = start + i
            try:
                tensors.append(preprocess_one(item, self.resize, self.crop, name=f"images[{idx}]"))
            except (OSError, ValueError, TypeError, MemoryError) as exc:
                failed[idx] = f"{type(exc).__name__}: {exc}"
                continue
            ok.append(idx)
        x = torch.stack(tensors) if tensors else None
        return x, np.asarray(ok, dtype=np.int64)

    def score(self, images: object, batch_size: int | None = None) -> np.ndarray:
        """The StructCore image scores of ``images`` (``predict(images).score``)."""
        return self.predict(images, batch_size).score

    def variant_scores(self, maps: object, score_max: object = None) -> dict[str, np.ndarray]:
        """Image scores of the standard variant grid, all from the same maps.

        Parameters
        ----------
        maps : array_like of shape (B, crop, crop), float32
            Maps from :meth:`predict` (``Prediction.maps``).
        score_max : array_like of shape (B,) or None
            The max scores to combine with (``Prediction.score_max``); None: max of ``maps``
            (not allowed with ``reweight=True``, whose factor needs the features).

        Returns
        -------
        scores : dict of str to ndarray of shape (B,), float64
            Keys: ``"max"``, ``"structcore"``, ``"struct_only"``,
            ``"{descriptor}/{norm}/{lam}/{mode}"`` and ``"struct/{descriptor}/{norm}/{mode}"``
            (see the module docstring for the grid).
        """
        self._check_fitted()
        backend = mb.backend_module(self.backend)
        m = as_float_array(maps, "maps", ndim=3)
        if m.shape[1:] != (self.crop, self.crop):
            raise ValueError(
                f"maps must have shape (B, {self.crop}, {self.crop}) like predict's maps; "
                f"got {m.shape}"
            )
        b = m.shape[0]
        if score_max is None:
            if self.reweight:
                raise ValueError(
                    "score_max is required when reweight=True (pass Prediction.score_max)"
                )
            mx = m.reshape(b, -1).max(axis=1).astype(np.float64)
        else:
            mx = as_float_array(score_max, "score_max", ndim=1, dtype=np.float64)
            if mx.shape != (b,):
                raise ValueError(f"score_max must have shape ({b},); got {mx.shape}")
        phi = self._describe(m, self.components_, self.pixel_threshold_, backend)
        _, dist, score = self.calibrator_.transform(phi, mx)
        out: dict[str, np.ndarray] = {"max": mx, "structcore": score, "struct_only": dist}
        paper, extended, _ = _component_sets()
        for mode in self.calibration_modes_:
            phi_all = self._describe(
                m, self.stored_components_, self.pixel_thresholds_[mode], backend
            )
            for dname, comps in (("paper", paper), ("extended", extended)):
                cols = [self.stored_components_.index(c) for c in comps]
                for norm in ("l2", "linf"):
                    for lam in ("auto", GRID_LAMBDA):
                        cal = StructCalibrator(norm, lam, self.threshold_quantile, names=comps)
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore", CalibrationWarning)
                            cal.fit(self.train_phi_[mode][:, cols], self.train_max_[mode])
                        _, dd, ss = cal.transform(phi_all[:, cols], mx)
                        lam_key = "auto" if isinstance(lam, str) else f"{lam:g}"
                        out[f"{dname}/{norm}/{lam_key}/{mode}"] = ss
                        if isinstance(lam, str):
                            out[f"struct/{dname}/{norm}/{mode}"] = dd
        return out

    # ---------------------------------------------------------------------------------------
    # the pipeline's pieces, public: features, maps and calibration maps (cached features)

    def features(self, images: object, batch_size: int | None = None) -> np.ndarray:
        """Patch features of images: what :meth:`fit` and :meth:`predict` score.

        Works before :meth:`fit` too (for caching features, then :meth:`fit_features`): an
        unfitted detector builds the backbone from its parameters (``backbone``, ``layers``,
        ``weights``, ``dim``, ``device``, ``seed``) exactly as ``fit`` does, on every call;
        a fitted one uses its own (``extractor_``).

        Parameters
        ----------
        images : image, sequence of images, ndarray (N, H, W, C) or tensor (N, C, H, W)
            Any number of images of any supported kind (see :mod:`structcore.images`).
        batch_size : int or None
            Images per backbone batch (None: the detector's ``batch_size``, as ``fit`` and
            ``predict`` batch them; convolution numerics can differ in the last bits
            between batch sizes).

        Returns
        -------
        features : ndarray of shape (N, h, w, feature_dim), float32
            One vector per patch of the ``crop`` x ``crop`` centre crop (h = w = crop / 8
            for the stride-8 default layers).

        Raises
        ------
        ValueError, TypeError
            Invalid parameters, images or ``batch_size`` (as ``fit`` and ``predict``).
        """
        if hasattr(self, "bank_"):
            extractor = self.extractor_
        else:
            extractor = self._new_extractor(self._validated())
        bs = check_int(self.batch_size if batch_size is None else batch_size, "batch_size", low=1)
        return self._features(extractor, as_image_list(images), bs)

    def fit_features(self, features: object, bank: object = None) -> Detector:
        """Fit from patch features instead of images (e.g. features cached on disk).

        With ``features = Detector(**params).features(images)`` this fits exactly what
        ``Detector(**params).fit(images)`` fits (the same bank, calibration and
        decisions); :meth:`predict`, :meth:`save` and the rest then work as after ``fit``.
        The backbone (``extractor_``) is built from the parameters as in ``fit``.

        Parameters
        ----------
        features : array_like of shape (N, h, w, feature_dim), float32
            Patch features of N >= 2 train-good images (N >= ``folds`` when cross-fit
            calibration runs), from :meth:`features` with the same parameters. float64 is
            converted to float32 (a copy); must be finite. ``(h, w)`` and ``feature_dim``
            must be what this detector's backbone gives at ``crop`` px (checked on one
            blank image); features of other weights with the same shape cannot be told
            apart, so keep the parameters with the cache.
        bank : array_like of shape (n_bank, feature_dim), float32, or None
            The memory bank to use instead of building the coreset (e.g. ``bank_`` of a
            detector fitted earlier on the same features and parameters, which gives the
            identical fit). float64 is converted to float32; copied; must be finite with
            ``n_bank >= k``. None: build it from ``features`` as ``fit`` does. The
            cross-fit banks of ``"crossfit"`` calibration are always built from
            ``features``.

        Returns
        -------
        self : Detector

        Raises
        ------
        TypeError
            Non-float ``features`` or ``bank``.
        ValueError
            Wrong rank, empty, non-finite, too few images, a grid or feature dimension that
            differs from the backbone's, a bank of another dimension or with fewer than
            ``k`` rows; invalid parameters.

        Warns
        -----
        CalibrationWarning
            As :meth:`fit`.

        Examples
        --------
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> train = rng.integers(100, 140, size=(6, 40, 40, 3), dtype=np.uint8)
        >>> det = Detector("resnet18", weights=None, dim=32, resize=32, crop=32, folds=2)
        >>> feats = det.features(train)  # before fit; cache them
        >>> feats.shape
        (6, 4, 4, 32)
        >>> maps, score_max = det.fit_features(feats).anomaly_maps(feats[:2])
        >>> maps.shape, score_max.shape
        ((2, 32, 32), (2,))
        >>> cal_maps, cal_max = det.calibration_maps(feats, "crossfit")
        >>> bool(np.array_equal(cal_max, det.train_max_["crossfit"]))
        True
        """
        p = self._validated()
        feats = as_float_array(features, "features", ndim=4)
        n, h, w, d = feats.shape
        modes = self._fit_modes(n, p, "features")
        b = None
        if bank is not None:
            b = np.array(as_float_array(bank, "bank", ndim=2), dtype=np.float32, copy=True)
            if b.shape[1] != d:
                raise ValueError(
                    f"bank must have {d} columns like features (N, h, w, {d}); got {b.shape}"
                )
            if p["k"] > b.shape[0]:
                raise ValueError(f"bank: k={p['k']} exceeds its {b.shape[0]} rows")
        extractor = self._new_extractor(p)
        expected = self._feature_shape(extractor)
        if (h, w, d) != expected:
            raise ValueError(
                f"features must have shape (N, {expected[0]}, {expected[1]}, {expected[2]}): "
                f"the grid and dimension of backbone {self.backbone!r} at crop {p['crop']} px "
                f"with dim={p['dim']}; got {feats.shape}"
            )
        self._reset()
        self.extractor_ = extractor
        timings = dict.fromkeys(("preprocess", "features", "bank", "calibration"), 0.0)
        return self._fit_on_features(feats, b, p, modes, mb.backend_module(self.backend), timings)

    def _feature_shape(self, extractor: FeatureExtractor) -> tuple[int, int, int]:
        """(h, w, feature_dim) of ``extractor`` at ``crop`` px, from one blank image."""
        import torch

        crop = int(self.crop)
        _, h, w, d = extractor(torch.zeros(1, 3, crop, crop)).shape
        return int(h), int(w), int(d)

    def _check_features(self, features: object, name: str) -> np.ndarray:
        """``features`` as float32 (N, h, w, D) with the fitted grid and dimension."""
        feats = as_float_array(features, name, ndim=4)
        h, w = self.feature_grid_
        d = int(self.bank_.shape[1])
        if feats.shape[1:] != (h, w, d):
            raise ValueError(
                f"{name} must have shape (N, {h}, {w}, {d}): the fitted feature grid and the "
                f"bank's feature_dim; got {feats.shape}"
            )
        return feats

    def anomaly_maps(
        self, features: object, batch_size: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Anomaly maps and max scores of patch features against the fitted bank.

        ``anomaly_maps(features(images))`` equals ``predict(images)``'s ``maps`` and
        ``score_max``; ``variant_scores(maps, score_max)["structcore"]`` is then its
        ``score``.

        Parameters
        ----------
        features : array_like of shape (N, h, w, feature_dim), float32
            Patch features (:meth:`features`); ``(h, w)`` = ``feature_grid_``,
            ``feature_dim`` = ``bank_.shape[1]``. float64 is converted to float32 (a copy);
            must be finite.
        batch_size : int or None
            Images per kNN pass (memory only; the results do not depend on it). None: the
            detector's ``batch_size``.

        Returns
        -------
        maps : ndarray of shape (N, crop, crop), float32
            Anomaly maps S: mean distance to the ``k`` nearest bank vectors, upsampled to
            the crop and blurred (Gaussian ``sigma`` px).
        score_max : ndarray of shape (N,), float64
            max(S), times PatchCore's reweighting factor when ``reweight=True``.

        Raises
        ------
        NotFittedError
            Before :meth:`fit` / :meth:`load`.
        TypeError, ValueError
            Non-float, wrong rank or shape, empty or non-finite ``features``; bad
            ``batch_size``.
        """
        self._check_fitted()
        feats = self._check_features(features, "features")
        bs = check_int(self.batch_size if batch_size is None else batch_size, "batch_size", low=1)
        backend = mb.backend_module(self.backend)
        n = feats.shape[0]
        crop = int(self.crop)
        maps = np.empty((n, crop, crop), dtype=np.float32)
        smax = np.empty(n, dtype=np.float64)
        for start in range(0, n, bs):
            sl = slice(start, start + bs)
            maps[sl], smax[sl] = self._score(feats[sl], self.bank_, backend)
        return maps, smax

    def calibration_maps(
        self, features: object, mode: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Calibration maps and max scores of train features (METHOD.md §3.5).

        What :meth:`fit` calibrates on (it keeps only their descriptors ``train_phi_`` and
        max scores ``train_max_``): with the features the detector was fitted on, the max
        scores equal ``train_max_[mode]``.

        Parameters
        ----------
        features : array_like of shape (N, h, w, feature_dim), float32
            Patch features of the train-good images, in fit order (the folds depend on it);
            shape checked as in :meth:`anomaly_maps`. float64 is converted to float32.
        mode : {"crossfit", "train"} or None
            ``"train"``: the images against the fitted bank ``bank_`` (same-train, biased
            low; equals :meth:`anomaly_maps`). ``"crossfit"``: ``folds`` seeded folds
            (:meth:`crossfit_folds`); each fold against a bank built from the other folds'
            features (``coreset_ratio``, ``projection_dim``, ``seed``); needs N >=
            ``folds``. None: the configured ``calibration``. Either mode may be asked for,
            whether or not ``fit`` computed it.

        Returns
        -------
        maps : ndarray of shape (N, crop, crop), float32
        score_max : ndarray of shape (N,), float64
            max(S) of each map (reweighted when ``reweight=True``).

        Raises
        ------
        NotFittedError
            Before :meth:`fit` / :meth:`load`.
        TypeError, ValueError
            Bad ``features`` (as :meth:`anomaly_maps`), an unknown ``mode``, fewer images
            than ``folds`` for ``"crossfit"``, or ``k`` above a cross-fit bank's size.
        """
        self._check_fitted()
        p = self._validated()
        m = p["calibration"] if mode is None else check_choice(mode, "mode", CALIBRATION_MODES)
        feats = self._check_features(features, "features")
        n = feats.shape[0]
        if m == "crossfit" and p["folds"] > n:
            raise ValueError(
                f"features: cross-fitting needs at least folds={p['folds']} images; got {n}"
            )
        return self._calibration_maps(m, feats, p, mb.backend_module(self.backend))

    def crossfit_folds(self, n_images: int) -> np.ndarray:
        """The cross-fit fold of each of ``n_images`` train images (``folds``, ``seed``).

        Parameters
        ----------
        n_images : int >= folds
            Number of train images, in fit order.

        Returns
        -------
        folds : ndarray of shape (n_images,), int64
            Values in ``[0, folds)``: ``numpy.random.default_rng(seed).permutation`` split
            by ``numpy.array_split``; an image's cross-fit map comes from the bank of the
            other folds' images.
        """
        folds = check_int(self.folds, "folds", low=2)
        seed = check_int(self.seed, "seed", low=0, high=2**63 - 1)
        n = check_int(n_images, "n_images", low=folds)
        out = np.empty(n, dtype=np.int64)
        for i, part in enumerate(_fold_parts(n, folds, seed)[1]):
            out[part] = i
        return out

    # ---------------------------------------------------------------------------------------
    # persistence (see structcore.io for the format)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted detector to ``path`` (.npz + JSON metadata, no pickle)."""
        from .io import save_detector

        save_detector(self, path)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, weights: object = "config", device: object = None
    ) -> Detector:
        """Read a detector written by :meth:`save`.

        Parameters
        ----------
        path : str or path-like
        weights : "config", "default", str path or None
            Where the backbone weights come from: ``"config"`` (the saved ``weights``
            setting), or an override (e.g. a local file on an air-gapped machine). Their hash
            must match the saved one.
        device : str or None
            Override of the saved ``device``.

        Raises
        ------
        ValueError
            Truncated, tampered, wrong-version or inconsistent files; mismatching weights.
        """
        from .io import load_detector

        return load_detector(cls, path, weights=weights, device=device)


def _same(a: object, b: object) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:  # pragma: no cover - exotic values
        return False
