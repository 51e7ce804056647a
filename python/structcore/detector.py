"""The detector: PatchCore memory bank + StructCore image score, scikit-learn style.

``Detector(...).fit(train_good_images)`` then ``predict(images) -> Prediction``. METHOD.md is
the specification. The detector is a composition of named stages, each a small type in its
own module (``docs/ARCHITECTURE.md`` draws the data flow), returned by :meth:`Detector.stages`:

=====================  =========================================  ================================
stage                  computes                                   module
=====================  =========================================  ================================
``FeatureExtractor``   images -> patch features (N, h, w, D)      :mod:`structcore.features`
``MemoryBank``         coreset of train patches; kNN patch scores :mod:`structcore.memory_bank`
``AnomalyMapper``      patch scores -> maps S (N, crop, crop)     :mod:`structcore.maps`
``Descriptor``         maps -> phi(S) (N, F)                      :mod:`structcore.descriptor`
``StructCalibrator``   phi, max(S) -> z, D, score, decision       :mod:`structcore.calibration`
=====================  =========================================  ================================

Fitting (all fitted state ends in ``_``; ``fit`` starts from scratch every time):

1. Patch features of every train image (``extractor_``); the bank ``bank_`` is a coreset of
   all train patches (``coreset_ratio``, ``projection_dim``, ``seed``).
2. Calibration maps of the train images (METHOD.md §3.5, :mod:`structcore.crossfit`), for
   each *mode* that is needed:

   * ``"crossfit"``: the images are split into ``folds`` seeded folds; a bank of the other
     folds' patches scores each held-out fold (calibration only; the final bank uses all);
   * ``"train"``: the train images scored against the final bank (the paper's plain mode;
     biased low, one kNN pass).

   The configured ``calibration``'s maps are always computed (``"synthetic"`` needs the
   cross-fitted ones); with ``variants=True`` (default) both modes' are, so
   :meth:`Detector.variant_scores` can re-calibrate every variant without refitting.
   With ``calibration="synthetic"`` the cross-fit pass also scores synthetic defects
   (:mod:`structcore.defects`: one CutPaste and one Perlin-blend defect per train image,
   seeded by ``seed``), each with the fold bank of its source image, which holds none of that
   image's patches (:meth:`Detector.defect_features`).
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
   ``calibration="synthetic"`` instead fits ``weights_`` (``a``) of the learned score
   ``max + sum_j a_j z_j`` (:meth:`~structcore.calibration.StructCalibrator.fit_synthetic`:
   L2 logistic regression of good cross-fitted vs synthetic-defect maps,
   :mod:`structcore.learned_calibration`); ``lambda_ = 0`` and ``decision_threshold_`` is the
   ``threshold_quantile`` quantile of the learned scores of the cross-fitted good maps.

Prediction: features -> kNN against ``bank_`` -> maps S (``crop x crop``, Gaussian ``sigma``
in pixels) -> ``score_max`` = max(S) (times PatchCore's reweighting factor when
``reweight=True``, see :mod:`structcore.memory_bank`) -> descriptor ``phi(S)`` (pixel
threshold of the configured mode) -> ``z``, ``D`` -> ``score = score_max + lambda_ * D``
(``calibration="synthetic"``: ``score = score_max + sum_j weights_[j] * z_j``, D still
reported as ``score_struct``); ``is_anomalous = score > decision_threshold_``.

The same pieces, public, for features cached outside the detector (e.g. an accuracy study of
image scores, :mod:`structcore.research.ablation`): :meth:`Detector.features` (patch features
of images, also before ``fit``), :meth:`Detector.fit_features` (``fit`` from features,
optionally with a given bank and synthetic-defect features), :meth:`Detector.defect_features`
(features of the synthetic defects ``fit`` makes), :meth:`Detector.anomaly_maps` (maps and
max scores of features, as ``predict``), :meth:`Detector.calibration_maps` (step 2's maps of
either mode) and :meth:`Detector.crossfit_folds`. They compute exactly what ``fit`` and
``predict`` do.
:meth:`Detector.variant_scores` (the grid of score variants) lives in
:mod:`structcore.research.grid`, imported only when called.

Saving: :meth:`Detector.save` hands plain state (:class:`structcore.io.DetectorState`) to
:mod:`structcore.io`; :meth:`Detector.load` reads it back and rebuilds the detector.
"""

from __future__ import annotations

import inspect
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._progress import progress
from ._validation import as_float_array, check_choice, check_int
from .calibration import (
    CALIBRATION_MODES,
    MAP_MODES,
    CalibrationWarning,
    StructCalibrator,
    map_mode,
)
from .crossfit import (
    BankFn,
    crossfit_folds,
    crossfit_maps,
    fold_parts,
    locate_rows,
    masked_bank,
    refit_bank,
)
from .defects import SYNTHETIC_MAKERS, defect_images
from .descriptor import EXTENDED_COMPONENTS, PAPER_COMPONENTS, Descriptor
from .features import FeatureExtractor
from .images import as_image_list, preprocess, preprocess_one, to_float_rgb
from .io import DetectorState, InvalidModelFile, invalid_file_error, read_state, write_state
from .maps import AnomalyMapper
from .memory_bank import MemoryBank
from .params import check_params
from .prediction import Prediction

__all__ = ["CALIBRATION_MODES", "Detector", "NotFittedError", "Prediction", "Stages"]

#: ``defects(held (n_held,) int64) -> (features (m, h, w, D) float32, sources (m,) int64)``:
#: the synthetic-defect features made on the ``held`` train images, in batch order.
DefectFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class NotFittedError(RuntimeError):
    """The detector is used before :meth:`Detector.fit` (or :meth:`Detector.load`)."""


@dataclass(frozen=True)
class Stages:
    """A fitted detector's pipeline, stage by stage (what :meth:`Detector.stages` returns).

    ``maps = mapper(bank.search(extractor(x), k)[0])``, ``phi = descriptor(maps)``,
    ``calibrator.transform(phi, mapper.max_scores(maps))`` is ``predict`` (without
    reweighting). The stages share the detector's arrays (no copies) and its current
    ``backend`` and ``threads``.
    """

    extractor: FeatureExtractor
    bank: MemoryBank
    mapper: AnomalyMapper
    descriptor: Descriptor
    calibrator: StructCalibrator


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
        Weight of D in the score ``max + lam * D``. Default ``0.0``: the score is max pooling
        (D is still computed and reported as ``Prediction.distance`` / ``score_struct``).
        This follows the held-out evidence of issue 13 (docs/RESULTS.md): no structural
        score met "never lose more than 0.005 image AUROC, gain 0.01 on average" on held-out
        data families, and max pooling has the best held-out worst case (0 by definition;
        the paper's hybrid: -0.0018 with MobileNetV2, -0.0086 with EfficientNet-Lite0).
        ``"auto"`` is the paper's StructCore score (lambda = std(max) / std(D), scale
        matching); ``0.05`` the author's fixed weight. The structural score helps a little
        where max pooling is weak and defects are smooth (Magnetic Tile: +0.004 to +0.009).
    calibration : {"crossfit", "train", "synthetic"}
        Which train-good maps give mu, sigma and lambda (module docstring). Default
        ``"train"``, the paper's own mode: on the real sets of docs/ABLATION.md it ranks
        images better than cross-fitting (image AUROC vs max pooling: mean +0.007, worst
        -0.001 over 18 set/backbone pairs; cross-fitted: mean -0.022, worst -0.117). The
        decision threshold comes from the cross-fitted maps whenever they are computed.
        ``"synthetic"``: the label-free learned score ``max + sum_j a_j z_j`` (module
        docstring), fitted on the cross-fitted maps (mu, sigma, the good class) against
        synthetic defects of the train images (CutPaste and Perlin blends, seeded by
        ``seed``); ``lam`` is not used (``lambda_ = 0``), ``norm`` only shapes the reported
        D. ``fit`` then runs the backbone on three times as many images. The research
        variant ``learned/cp+perlin`` of docs/ABLATION.md: opt-in only (on Magnetic Tile
        it loses to max pooling).
    folds : int >= 2
        Cross-fitting folds.
    crossfit_bank : {"masked", "coreset"}
        How the bank that scores a held-out fold is made (:mod:`structcore.crossfit`):
        ``"masked"`` (default), the final coreset without the rows selected from that fold's
        images (no further coreset: fit costs one selection plus two kNN passes), or
        ``"coreset"``, a fresh coreset of the other folds (``folds`` more selections, the
        behaviour before 0.2; the cost grows with the square of the train size). Measured
        (bench/bench_fit.py, MobileNetV2, AMD EPYC Zen 4, 1 thread): Magnetic Tile with 200
        train images, fit 180 s vs 772 s (4.3x), the default score and ``max`` identical,
        threshold FPR on the good test images 0.021 either way; only scores calibrated on the
        cross-fitted maps move (``calibration="crossfit"`` variants: -0.042 to +0.020 AUROC).
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
        Compute both calibration maps (``"crossfit"`` and ``"train"``) in ``fit`` so
        :meth:`variant_scores` has the whole grid (with ``calibration="train"`` this is what
        makes ``fit`` run the cross-fit).

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
        lam: str | float = 0.0,
        calibration: str = "train",
        folds: int = 5,
        crossfit_bank: str = "masked",
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
        self.crossfit_bank = crossfit_bank
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

    def validate_params(self) -> dict[str, Any]:
        """Check every constructor parameter now, as :meth:`fit` does first.

        Returns
        -------
        checked : dict
            Normalised values (:func:`structcore.params.check_params`).

        Raises
        ------
        TypeError, ValueError
            The first invalid parameter, named, with its value.
        """
        return check_params(self.get_params())

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
    # the stages

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

    def _build_bank(self, features: np.ndarray, p: dict[str, Any]) -> MemoryBank:
        """The coreset bank of train ``features`` (N, h, w, D) (final or cross-fit)."""
        return MemoryBank.build(
            features,
            p["coreset_ratio"],
            projection_dim=p["projection_dim"],
            seed=p["seed"],
            backend=self.backend,
            threads=self.threads,
        )

    def _mapper(self) -> AnomalyMapper:
        return AnomalyMapper(
            int(self.crop), float(self.sigma), backend=self.backend, threads=self.threads
        )

    def stages(self) -> Stages:
        """The fitted pipeline as named stages (``docs/ARCHITECTURE.md``).

        Returns
        -------
        stages : Stages
            ``extractor_`` -> ``MemoryBank(bank_)`` -> ``AnomalyMapper(crop, sigma)`` ->
            ``Descriptor(components_, pixel_threshold_)`` -> ``calibrator_``, with the
            detector's current ``backend`` and ``threads``.

        Raises
        ------
        NotFittedError
            Before :meth:`fit` / :meth:`load`.
        """
        self._check_fitted()
        return Stages(
            extractor=self.extractor_,
            bank=MemoryBank(self.bank_, backend=self.backend, threads=self.threads),
            mapper=self._mapper(),
            descriptor=Descriptor(
                self.components_, self.pixel_threshold_, backend=self.backend, threads=self.threads
            ),
            calibrator=self.calibrator_,
        )

    def _score(
        self,
        feats: np.ndarray,
        bank: MemoryBank,
        mapper: AnomalyMapper,
        timings: dict[str, float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Maps (B, crop, crop) float32 and max scores (B,) float64 of feature grids."""
        t0 = time.perf_counter()
        scores, nearest = bank.search(feats, self.k)
        t1 = time.perf_counter()
        maps = mapper(scores)
        smax = mapper.max_scores(maps)
        if self.reweight:
            smax = smax * bank.reweight(feats, scores, nearest)
        if timings is not None:
            timings["knn"] += t1 - t0
            timings["map"] += time.perf_counter() - t1
        return maps, smax

    def _calibration_maps(
        self,
        mode: str,
        feats: np.ndarray,
        p: dict[str, Any],
        bank: MemoryBank,
        on_bank: BankFn | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Calibration maps (N, crop, crop) and max scores (N,) of the train images.

        ``on_bank(held, fold_bank)`` (``"crossfit"`` only) is called with each fold's bank.
        """
        mapper = self._mapper()
        if mode == "train":
            return self._score(feats, bank, mapper)
        if p["crossfit_bank"] == "masked":
            if bank.sources is None:
                bank.sources = locate_rows(bank.vectors, feats)

            def build(held: np.ndarray) -> MemoryBank:
                return masked_bank(bank, held)
        else:

            def build(held: np.ndarray) -> MemoryBank:
                return refit_bank(feats, held, lambda f: self._build_bank(f, p))

        return crossfit_maps(
            feats,
            folds=p["folds"],
            seed=p["seed"],
            k=p["k"],
            batch_size=p["batch_size"],
            build=build,
            score=lambda f, b: self._score(f, b, mapper),
            show_progress=bool(self.progress),
            on_bank=on_bank,
        )

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
            A configured descriptor component has zero variance on the calibration maps;
            with ``calibration="synthetic"``, a learned fit that falls back to max pooling.
        """
        p = self.validate_params()
        self._reset()
        items = as_image_list(images)
        modes = self._fit_modes(len(items), p, "images")
        timings = dict.fromkeys(("preprocess", "features", "bank", "calibration"), 0.0)
        self.extractor_ = extractor = self._new_extractor(p)
        feats = extractor.extract(
            items,
            resize=self.resize,
            crop=self.crop,
            batch_size=p["batch_size"],
            timings=timings,
            show_progress=bool(self.progress),
        )
        defects: DefectFn | None = None
        if p["calibration"] == "synthetic":
            timings["synthetic"] = 0.0

            def defects(held: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                t0 = time.perf_counter()
                out = self._fold_defect_features(items, held, p, extractor)
                timings["synthetic"] += time.perf_counter() - t0
                return out

        return self._fit_on_features(feats, None, p, modes, timings, defects)

    def _fold_defect_features(
        self,
        items: Sequence[object],
        held: np.ndarray,
        p: dict[str, Any],
        extractor: FeatureExtractor,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Features (m, h, w, D) and sources (m,) of the synthetic defects of ``held`` images.

        Image-major, :data:`~structcore.defects.SYNTHETIC_MAKERS` order inside; the backbone
        runs on them in batches of ``batch_size`` (what :meth:`defect_features` returns for
        this fold).
        """
        imgs: list[np.ndarray] = []
        for i in held.tolist():
            src = _defect_source(items[i], f"images[{i}]")
            imgs += defect_images(
                src,
                i,
                seed=p["seed"],
                makers=SYNTHETIC_MAKERS,
                resize=p["resize"],
                crop=p["crop"],
            )
        feats = extractor.extract(
            imgs, resize=p["resize"], crop=p["crop"], batch_size=p["batch_size"]
        )
        return feats, np.repeat(np.asarray(held, dtype=np.int64), len(SYNTHETIC_MAKERS))

    def defect_features(self, images: object) -> tuple[np.ndarray, np.ndarray]:
        """Patch features of the synthetic defects that ``fit(images)`` makes and scores.

        For ``calibration="synthetic"`` with features cached outside the detector:
        ``fit_features(features(images), defects=defect_features(images))`` fits what
        ``fit(images)`` fits (the same defects, backbone batches and maps). Works before
        :meth:`fit` too (the backbone is built from the parameters, as :meth:`features`).

        One defect per maker of :data:`structcore.defects.SYNTHETIC_MAKERS` (CutPaste,
        Perlin blend) per train image, seeded by ``[seed, image index, maker index]``
        (:func:`structcore.defects.defect_images`), inside the centre crop. 8-bit sources
        give 8-bit defect images; others (16-bit, float) are made in float.

        Parameters
        ----------
        images : sequence of images, ndarray (N, H, W, C) or tensor (N, C, H, W)
            The train-good images, in fit order (N >= ``folds``; the seeds and the batch
            order depend on the positions).

        Returns
        -------
        features : ndarray of shape (M, h, w, feature_dim), float32
            M = N * len(SYNTHETIC_MAKERS), in fit's order: fold by fold
            (:meth:`crossfit_folds`), image by image, maker by maker.
        sources : ndarray of shape (M,), int64
            The train image (index into ``images``) each defect was made on.

        Raises
        ------
        TypeError, ValueError
            Invalid parameters or images; fewer images than ``folds``; images whose centre
            crop is under :data:`structcore.defects.MIN_CROP_SIDE` pixels.
        """
        p = self.validate_params()
        items = as_image_list(images)
        n = len(items)
        if p["folds"] > n:
            raise ValueError(f"images: folds={p['folds']} exceeds the {n} train images")
        extractor = self.extractor_ if hasattr(self, "bank_") else self._new_extractor(p)
        parts = fold_parts(n, p["folds"], p["seed"])[1]
        out = [self._fold_defect_features(items, held, p, extractor) for held in parts]
        return np.concatenate([f for f, _ in out]), np.concatenate([s for _, s in out])

    def _fit_modes(self, n: int, p: dict[str, Any], name: str) -> tuple[str, ...]:
        """The calibration modes ``fit`` computes for ``n`` train images (checks ``n``)."""
        if n < 2:
            raise ValueError(f"{name}: fit needs at least 2 train images; got {n}")
        modes = MAP_MODES if self.variants else (map_mode(p["calibration"]),)
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
        timings: dict[str, float],
        defects: DefectFn | None = None,
    ) -> Detector:
        """Steps 1 (bank) to 4 of the module docstring; ``extractor_`` is already set.

        ``defects`` (``calibration="synthetic"``): the synthetic-defect features of a fold's
        images, scored in the cross-fit pass with that fold's bank.
        """
        n, h, w, d = feats.shape
        t0 = time.perf_counter()
        final = (
            self._build_bank(feats, p)
            if bank is None
            else MemoryBank(bank, backend=self.backend, threads=self.threads)
        )
        if p["k"] > len(final):
            raise ValueError(f"k={p['k']} exceeds the {len(final)} bank vectors")
        self.bank_ = final.vectors
        t1 = time.perf_counter()
        timings["bank"] = t1 - t0

        self.components_ = p["components"]
        self.stored_components_ = tuple(EXTENDED_COMPONENTS) + tuple(
            c
            for c in dict.fromkeys(PAPER_COMPONENTS + self.components_)
            if c not in EXTENDED_COMPONENTS
        )
        self.calibration_modes_ = modes
        self.pixel_thresholds_: dict[str, float] = {}
        self.train_phi_: dict[str, np.ndarray] = {}
        self.train_max_: dict[str, np.ndarray] = {}
        syn_maps: list[np.ndarray] = []
        syn_max: list[np.ndarray] = []
        syn_src: list[np.ndarray] = []

        def score_defects(held: np.ndarray, fold_bank: MemoryBank) -> None:
            assert defects is not None
            f_def, s_def = defects(held)
            mapper = self._mapper()
            for start in range(0, len(s_def), p["batch_size"]):
                m, s = self._score(f_def[start : start + p["batch_size"]], fold_bank, mapper)
                syn_maps.append(m)
                syn_max.append(s)
            syn_src.append(s_def)

        for mode in modes:
            on_bank = score_defects if (mode == "crossfit" and defects is not None) else None
            maps, smax = self._calibration_maps(mode, feats, p, final, on_bank)
            described = Descriptor.fit(
                maps,
                self.stored_components_,
                self.pixel_quantile,
                backend=self.backend,
                threads=self.threads,
            )
            self.pixel_thresholds_[mode] = described.threshold
            self.train_phi_[mode] = described(maps)
            self.train_max_[mode] = smax
            del maps
        if defects is not None:
            if not syn_maps:
                raise ValueError("defects: no synthetic-defect features of these train images")
            self.synthetic_phi_ = Descriptor(
                self.components_,
                self.pixel_thresholds_["crossfit"],
                backend=self.backend,
                threads=self.threads,
            )(np.concatenate(syn_maps))
            self.synthetic_max_ = np.concatenate(syn_max)
            self.synthetic_sources_ = np.concatenate(syn_src)
            del syn_maps
        timings["calibration"] = time.perf_counter() - t1

        self.feature_grid_ = (int(h), int(w))
        self.feature_dim_ = int(d)
        self.n_train_ = int(n)
        self.weights_sha256_ = self.extractor_.weights_sha256
        self._fit_calibrator(warn=True)
        self.fit_timings_ = timings
        return self

    def _fit_calibrator(self, warn: bool) -> None:
        """Stage 5 on the stored calibration descriptors (step 4 of the module docstring)."""
        mode = map_mode(str(self.calibration))
        cols = [self.stored_components_.index(c) for c in self.components_]
        cal = StructCalibrator(self.norm, self.lam, self.threshold_quantile, names=self.components_)
        with warnings.catch_warnings():
            if not warn:
                warnings.simplefilter("ignore", CalibrationWarning)
            if self.calibration == "synthetic":
                cal.fit_synthetic(
                    self.train_phi_[mode][:, cols],
                    self.train_max_[mode],
                    self.synthetic_phi_,
                    self.synthetic_max_,
                    defect_sources=self.synthetic_sources_,
                    seed=int(self.seed),
                )
                self.learned_ = cal.learned_
            else:
                cal.fit(self.train_phi_[mode][:, cols], self.train_max_[mode])
        # Same-train maps are biased low (their images are in the bank): a threshold taken on
        # them flags nearly every new image. Use the cross-fitted maps whenever they exist.
        tmode = "crossfit" if "crossfit" in self.calibration_modes_ else mode
        if tmode != mode:
            scores = cal.score(self.train_phi_[tmode][:, cols], self.train_max_[tmode])
            cal.decision_threshold_ = float(np.quantile(scores, float(self.threshold_quantile)))
        self._set_calibrator(cal, self.pixel_thresholds_[mode])

    def _set_calibrator(self, cal: StructCalibrator, threshold: float) -> None:
        self.calibrator_ = cal
        self.pixel_threshold_ = threshold
        self.mu_ = cal.mu_
        self.sigma_ = cal.sigma_
        self.lambda_ = cal.lambda_
        self.weights_ = cal.weights_
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
        bs = check_int(self.batch_size if batch_size is None else batch_size, "batch_size", low=1)
        items = as_image_list(images)
        timings = dict.fromkeys(
            ("preprocess", "features", "knn", "map", "descriptor", "calibration"), 0.0
        )
        st = self.stages()
        maps, smax, phi, valid, failed = self._predict_maps(items, bs, errors, st, timings)
        t0 = time.perf_counter()
        n, n_comp = len(items), len(self.components_)
        z = np.full((n, n_comp), np.nan, dtype=np.float64)
        dist, score = np.full(n, np.nan), np.full(n, np.nan)
        decision = np.zeros(n, dtype=bool)
        if valid.any():
            z[valid], dist[valid], score[valid] = st.calibrator.transform(phi[valid], smax[valid])
            decision[valid] = st.calibrator.decide(score[valid])
        timings["calibration"] = time.perf_counter() - t0
        return Prediction(
            maps, smax, dist, score, phi, z, decision, timings, valid=valid, errors=failed
        )

    def _predict_maps(
        self,
        items: list[object],
        bs: int,
        errors: str,
        st: Stages,
        timings: dict[str, float],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[int, str]]:
        """Stages 1-4 of ``predict``, ``bs`` images at a time: maps, max, phi, valid, errors."""
        n, crop = len(items), int(self.crop)
        maps = np.full((n, crop, crop), np.nan, dtype=np.float32)
        smax = np.full(n, np.nan, dtype=np.float64)
        phi = np.full((n, len(self.components_)), np.nan, dtype=np.float64)
        valid = np.zeros(n, dtype=bool)
        failed: dict[int, str] = {}
        starts = range(0, n, bs)
        for start in progress(starts, bool(self.progress), len(starts), "predict"):
            batch = items[start : start + bs]
            t0 = time.perf_counter()
            if errors == "skip":
                x, ok = self._preprocess_skipping(batch, start, failed)
            else:
                x = preprocess(batch, self.resize, self.crop, offset=start)
                ok = np.arange(start, start + len(batch))
            t1 = time.perf_counter()
            timings["preprocess"] += t1 - t0
            if ok.size == 0:
                continue
            feats = st.extractor(x)
            timings["features"] += time.perf_counter() - t1
            bmaps, smax[ok] = self._score(feats, st.bank, st.mapper, timings)
            maps[ok] = bmaps
            t2 = time.perf_counter()
            phi[ok] = st.descriptor(bmaps)  # the batch's own maps, not a fancy-indexed copy
            timings["descriptor"] += time.perf_counter() - t2
            valid[ok] = True
        return maps, smax, phi, valid, failed

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

        A thin call into :func:`structcore.research.grid.variant_scores` (parameters,
        keys and errors documented there), imported only when called: ``maps`` are
        ``Prediction.maps`` (B, crop, crop) and ``score_max`` ``Prediction.score_max`` (or
        None: max of ``maps``). Returns a dict of score name to (B,) float64 scores.
        """
        from .research.grid import variant_scores

        return variant_scores(self, maps, score_max)

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
            extractor = self._new_extractor(self.validate_params())
        bs = check_int(self.batch_size if batch_size is None else batch_size, "batch_size", low=1)
        return extractor.extract(
            as_image_list(images),
            resize=self.resize,
            crop=self.crop,
            batch_size=bs,
            show_progress=bool(self.progress),
        )

    def fit_features(
        self, features: object, bank: object = None, *, defects: object = None
    ) -> Detector:
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
        defects : (features, sources) or None
            ``calibration="synthetic"`` only, and required there: the synthetic-defect
            features, an array of shape (M, h, w, feature_dim) float32 (as ``features``),
            and the train image each was made on, integers of shape (M,) in ``[0, N)``;
            :meth:`defect_features` returns them (then the fit equals ``fit(images)``).
            Each defect is scored by the cross-fit bank of its source image's fold.

        Returns
        -------
        self : Detector

        Raises
        ------
        TypeError
            Non-float ``features``, ``bank`` or defect features; ``defects`` not a pair.
        ValueError
            Wrong rank, empty, non-finite, too few images, a grid or feature dimension that
            differs from the backbone's, a bank of another dimension or with fewer than
            ``k`` rows; ``defects`` missing with ``calibration="synthetic"``, given with
            another calibration, or of the wrong shape or sources; invalid parameters.

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
        p = self.validate_params()
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
        fn = self._defect_provider(defects, p, feats.shape)
        self._reset()
        self.extractor_ = extractor
        timings = dict.fromkeys(("preprocess", "features", "bank", "calibration"), 0.0)
        return self._fit_on_features(feats, b, p, modes, timings, fn)

    @staticmethod
    def _defect_provider(
        defects: object, p: dict[str, Any], shape: tuple[int, ...]
    ) -> DefectFn | None:
        """``defects`` of :meth:`fit_features`, checked, as a per-fold provider."""
        if p["calibration"] != "synthetic":
            if defects is not None:
                raise ValueError(
                    "defects is used only with calibration='synthetic'; got "
                    f"calibration={p['calibration']!r}"
                )
            return None
        if defects is None:
            raise ValueError(
                "defects is required with calibration='synthetic': pass "
                "defects=det.defect_features(images) (synthetic-defect features, sources)"
            )
        if not isinstance(defects, (tuple, list)) or len(defects) != 2:
            raise TypeError(
                "defects must be a pair (features (M, h, w, D), sources (M,)); got "
                f"{type(defects).__name__}"
            )
        dfeat = as_float_array(defects[0], "defects[0]", ndim=4)
        if dfeat.shape[1:] != tuple(shape[1:]):
            raise ValueError(
                f"defects[0] must have shape (M, {shape[1]}, {shape[2]}, {shape[3]}) like "
                f"features; got {dfeat.shape}"
            )
        src = np.asarray(defects[1])
        if src.dtype.kind not in "iu" or src.shape != (dfeat.shape[0],):
            raise ValueError(
                f"defects[1] (sources) must be integers of shape ({dfeat.shape[0]},); got "
                f"dtype {src.dtype} shape {src.shape}"
            )
        src = src.astype(np.int64)
        if src.min() < 0 or src.max() >= shape[0]:
            raise ValueError(
                f"defects[1] (sources) must index the {shape[0]} train images; got values in "
                f"[{int(src.min())}, {int(src.max())}]"
            )

        def provider(held: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            rows = np.flatnonzero(np.isin(src, held))
            return dfeat[rows], src[rows]

        return provider

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
        st = self.stages()
        feats = self._check_features(features, "features")
        bs = check_int(self.batch_size if batch_size is None else batch_size, "batch_size", low=1)
        n = feats.shape[0]
        crop = int(self.crop)
        maps = np.empty((n, crop, crop), dtype=np.float32)
        smax = np.empty(n, dtype=np.float64)
        for start in range(0, n, bs):
            sl = slice(start, start + bs)
            maps[sl], smax[sl] = self._score(feats[sl], st.bank, st.mapper)
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
        mode : {"crossfit", "train", "synthetic"} or None
            ``"train"``: the images against the fitted bank ``bank_`` (same-train, biased
            low; equals :meth:`anomaly_maps`). ``"crossfit"``: ``folds`` seeded folds
            (:meth:`crossfit_folds`); each fold against a bank without that fold's images
            (``crossfit_bank``); needs N >= ``folds``. ``"synthetic"``: its good maps, the
            cross-fitted ones (its synthetic-defect maps are not returned here). None: the
            configured ``calibration``. Any mode may be asked for, whether or not ``fit``
            computed it.

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
        st = self.stages()
        p = self.validate_params()
        m = map_mode(
            p["calibration"] if mode is None else check_choice(mode, "mode", CALIBRATION_MODES)
        )
        feats = self._check_features(features, "features")
        n = feats.shape[0]
        if m == "crossfit" and p["folds"] > n:
            raise ValueError(
                f"features: cross-fitting needs at least folds={p['folds']} images; got {n}"
            )
        return self._calibration_maps(m, feats, p, st.bank)

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
        return crossfit_folds(n_images, self.folds, self.seed)

    # ---------------------------------------------------------------------------------------
    # persistence: plain state to and from structcore.io (the file format lives there)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted detector to ``path`` (.npz + JSON metadata, no pickle).

        The file holds :class:`structcore.io.DetectorState` (format in :mod:`structcore.io`);
        the C++ ``structcore::Scorer`` reads it too.

        Raises
        ------
        NotFittedError
            Before :meth:`fit` / :meth:`load`.
        ValueError
            A parameter value that JSON cannot hold.
        """
        self._check_fitted()
        write_state(self._state(), path)

    def _state(self) -> DetectorState:
        return DetectorState(
            config=self.get_params(),
            layers=tuple(self.extractor_.layers),
            weights_sha256=self.weights_sha256_,
            components=tuple(self.components_),
            stored_components=tuple(self.stored_components_),
            calibration=str(self.calibration),
            calibration_modes=tuple(self.calibration_modes_),
            feature_grid=self.feature_grid_,
            feature_dim=self.feature_dim_,
            n_train=self.n_train_,
            lam=float(self.lambda_),
            decision_threshold=float(self.decision_threshold_),
            pixel_threshold=float(self.pixel_threshold_),
            pixel_thresholds=dict(self.pixel_thresholds_),
            bank=self.bank_,
            mu=self.mu_,
            sigma=self.sigma_,
            weights=self.weights_,
            train_phi=dict(self.train_phi_),
            train_max=dict(self.train_max_),
        )

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        weights: object = "config",
        device: object = None,
        shared_bank: np.ndarray | None = None,
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
        shared_bank : ndarray of shape (M, D), float32, C-contiguous, optional
            The file's memory bank, already in memory this process shares with others (a
            read-only view of Ray's object store, a memory-mapped file): the file's bank is
            compared with it block by block and ``bank_`` *is* this array, so many
            processes on a node hold one bank and none of them ever reads a private copy.

        Raises
        ------
        FileNotFoundError
            No file at ``path``.
        ValueError
            Truncated, tampered, wrong-version or inconsistent files; mismatching weights;
            :class:`structcore.io.SharedArrayMismatch` when ``shared_bank`` is not the
            file's bank.
        TypeError
            ``shared_bank`` is not a numpy array.
        """
        if shared_bank is not None and not isinstance(shared_bank, np.ndarray):
            raise TypeError(
                f"shared_bank must be a numpy array or None; got {type(shared_bank).__name__}"
            )
        state = read_state(path, shared=None if shared_bank is None else {"bank": shared_bank})
        try:
            return cls.from_state(state, weights=weights, device=device)
        except InvalidModelFile as exc:
            raise invalid_file_error(path, str(exc)) from None

    @classmethod
    def from_state(
        cls, state: DetectorState, *, weights: object = "config", device: object = None
    ) -> Detector:
        """Build a fitted detector from plain state (:func:`structcore.io.read_state`).

        Parameters
        ----------
        state : DetectorState
        weights, device
            As :meth:`load`.

        Raises
        ------
        structcore.io.InvalidModelFile
            The state's config is not a valid detector, or disagrees with its arrays
            (:meth:`load` turns it into a ``ValueError`` naming the file).
        ValueError
            The backbone weights differ from those the state was fitted with.
        """
        det, p = cls._configured(state, weights, device)
        extractor = FeatureExtractor(
            det.backbone,
            list(state.layers),
            det.weights,
            p["dim"],
            det.device,
            p["seed"],
            p["backbone_precision"],
        )
        if extractor.weights_sha256 != state.weights_sha256:
            raise ValueError(
                f"the backbone weights ({det.weights!r}, sha256 {extractor.weights_sha256[:12]}"
                f"...) differ from those the detector was fitted with (sha256 "
                f"{state.weights_sha256[:12]}...); pass Detector.load(path, weights=...) "
                "with the original weights"
            )
        det.extractor_ = extractor
        det.bank_ = np.ascontiguousarray(state.bank, dtype=np.float32)
        det.components_ = tuple(state.components)
        det.stored_components_ = tuple(state.stored_components)
        det.calibration_modes_ = tuple(state.calibration_modes)
        det.pixel_thresholds_ = dict(state.pixel_thresholds)
        det.train_phi_ = dict(state.train_phi)
        det.train_max_ = dict(state.train_max)
        det.feature_grid_ = tuple(state.feature_grid)
        det.feature_dim_ = int(state.feature_dim)
        det.n_train_ = int(state.n_train)
        det.weights_sha256_ = extractor.weights_sha256
        cal = StructCalibrator(det.norm, det.lam, det.threshold_quantile, names=state.components)
        cal._restore(
            state.mu, state.sigma, state.lam, state.decision_threshold, weights=state.weights
        )
        det._set_calibrator(cal, state.pixel_threshold)
        return det

    @classmethod
    def _configured(
        cls, state: DetectorState, weights: object, device: object
    ) -> tuple[Detector, dict[str, Any]]:
        """An unfitted detector with the state's parameters (validated) and those values."""
        try:
            det = cls(**state.config)
        except TypeError as exc:
            raise InvalidModelFile(f"config holds unknown parameters ({exc})") from exc
        if weights != "config":
            det.weights = weights  # type: ignore[assignment]
        if device is not None:
            det.device = device  # type: ignore[assignment]
        try:
            p = det.validate_params()
        except (TypeError, ValueError) as exc:
            raise InvalidModelFile(f"config is invalid ({type(exc).__name__}: {exc})") from exc
        if det.weights is not None and not isinstance(det.weights, (str, os.PathLike)):
            raise InvalidModelFile(
                f"config.weights must be 'default', a path or null; got {det.weights!r:.200}"
            )
        if not isinstance(det.device, str):
            raise InvalidModelFile(f"config.device must be a string; got {det.device!r:.200}")
        if map_mode(p["calibration"]) not in state.calibration_modes:
            raise InvalidModelFile(
                f"calibration {p['calibration']!r} was not fitted ({list(state.calibration_modes)})"
            )
        if (p["calibration"] == "synthetic") != (state.weights is not None):
            raise InvalidModelFile(
                "the learned weights must be stored exactly when config.calibration is "
                f"'synthetic' (calibration {p['calibration']!r}, weights "
                f"{'present' if state.weights is not None else 'absent'})"
            )
        if tuple(p["components"]) != tuple(state.components):
            raise InvalidModelFile("components disagree with config.descriptor")
        if p["k"] > state.bank.shape[0]:
            raise InvalidModelFile(
                f"config.k = {p['k']} exceeds the bank's {state.bank.shape[0]} rows"
            )
        return det, p


def _same(a: object, b: object) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:  # pragma: no cover - exotic values
        return False


def _defect_source(item: object, name: str) -> np.ndarray:
    """One train image as the defect makers take it: (H, W, 3) uint8 when it is 8-bit (an
    uint8 array, or a float image whose values are exactly k / 255), else float32 in [0, 1]."""
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.shape[2:] == (3,):
        return item  # (H, W, 3): shape[2:] is (3,) for 3-D arrays only
    x = to_float_rgb(item, name)
    q = np.rint(x * np.float32(255.0))
    if np.array_equal(q.astype(np.float32) / np.float32(255.0), x):
        return q.astype(np.uint8)
    return x
