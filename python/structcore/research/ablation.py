"""Accuracy ablation of image scores: cached maps, paired bootstrap, leave-one-out selection.

This module is the reusable half of ``bench/accuracy.py`` (issue 7). It holds no score
definitions (those are in :mod:`structcore.research.variants`); it provides

* :class:`MapConfig` and :func:`config_hash`: what a cached set of maps depends on;
* :func:`load_or_compute_maps`: the detector's own pipeline through its public pieces
  (:meth:`~structcore.Detector.features`, :meth:`~structcore.Detector.fit_features`,
  :meth:`~structcore.Detector.calibration_maps` for the cross-fitted and same-train
  calibration maps, :meth:`~structcore.Detector.anomaly_maps` for the test maps) with every
  stage cached on disk as ``.npz`` (features, banks, maps), keyed by data set, backbone and a
  hash of the configuration and the image lists. A new score variant is then evaluated from
  the cached maps in seconds;
* :func:`auroc_matrix` and :func:`paired_bootstrap`: image AUROC of many score columns and a
  seeded, stratified, paired bootstrap of the AUROC difference of each column to a reference
  column (max pooling);
* :func:`select_leave_one_out`: a label-free-at-test-time choice of the default variant,
  picked on every set except the held-out one (and the sets that share its images).

Nothing here changes the maps: the maps are exactly those :meth:`Detector.predict` returns for
the same configuration (the test maps are scored against the bank of all train images).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata

__all__ = [
    "MapConfig",
    "MapSet",
    "auroc",
    "auroc_matrix",
    "bank_path",
    "config_hash",
    "crossfit_maps_from_banks",
    "family_stats",
    "fold_banks_path",
    "held_out_goal",
    "load_final_bank",
    "load_or_compute_fold_banks",
    "load_or_compute_maps",
    "load_or_compute_split_maps",
    "paired_bootstrap",
    "report",
    "score_with_bank",
    "select_leave_one_family_out",
    "select_leave_one_out",
]


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class MapConfig:
    """Everything the cached maps of one (data set, backbone) depend on.

    Every attribute is the :class:`structcore.Detector` parameter of the same name
    (``Detector(**dataclasses.asdict(cfg))``).
    """

    backbone: str
    resize: int = 256
    crop: int = 224
    dim: int = 1024
    coreset_ratio: float = 0.1
    projection_dim: int = 128
    k: int = 1
    sigma: float = 4.0
    folds: int = 5
    seed: int = 0

    def feature_part(self) -> dict[str, Any]:
        """The fields the patch features depend on."""
        return {
            "backbone": self.backbone,
            "resize": self.resize,
            "crop": self.crop,
            "dim": self.dim,
        }


def config_hash(*parts: object) -> str:
    """A 16-hex-digit SHA-256 of the JSON of ``parts`` (sorted keys; paths as strings).

    Parameters
    ----------
    *parts : JSON-serialisable objects (dicts, lists, str, numbers; ``Path`` becomes ``str``)

    Returns
    -------
    str
    """
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class MapSet:
    """Cached maps of one data set under one configuration.

    Attributes
    ----------
    test_maps : ndarray (n_test, crop, crop), float32
        Test maps S (bank of all train images), as :meth:`Detector.predict` returns them.
    test_max : ndarray (n_test,), float64
    labels : ndarray (n_test,), int64
        1 = defective.
    defects : ndarray (n_test,), str
        Defect type per test image (``"good"`` for normal images).
    cal_maps : dict of str to ndarray (n_train, crop, crop), float32
        Calibration maps per mode (``"crossfit"``: k-fold banks; ``"train"``: the final bank).
    cal_max : dict of str to ndarray (n_train,), float64
    folds : ndarray (n_train,), int64
        Cross-fit fold index of every train image
        (:meth:`structcore.Detector.crossfit_folds`).
    meta : dict
        Configuration, image lists' hash and stage timings (seconds).
    """

    test_maps: np.ndarray
    test_max: np.ndarray
    labels: np.ndarray
    defects: np.ndarray
    cal_maps: dict[str, np.ndarray]
    cal_max: dict[str, np.ndarray]
    folds: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def _atomic_savez(path: Path, **arrays: Any) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def _log(log: Callable[[str], None] | None, msg: str) -> None:
    if log is not None:
        log(msg)


def load_or_compute_maps(
    name: str,
    train: Sequence[str | Path],
    test: Sequence[str | Path],
    labels: Sequence[int],
    defects: Sequence[str],
    cfg: MapConfig,
    cache_dir: str | Path,
    *,
    threads: int | None = None,
    batch_size: int = 16,
    log: Callable[[str], None] | None = None,
    compute: bool = True,
    crossfit: bool = True,
    crossfit_bank: str = "coreset",
) -> MapSet:
    """Maps of a data set under ``cfg``: from the cache, else computed and cached.

    Three cache files under ``cache_dir`` (each written atomically):
    ``features__{name}__{backbone}__{h}.npz`` (train and test patch features),
    ``bank__{name}__{backbone}__{h}.npz`` (the final bank: its rows and the train image each
    row was selected from) and ``maps__{name}__{backbone}__{h}.npz`` (test maps, both
    calibration modes' maps, max scores, folds; ``maps_masked__...`` with
    ``crossfit_bank="masked"``). ``h`` hashes the relevant part of ``cfg`` and the image lists.

    Parameters
    ----------
    name : str
        Data set name (file names only).
    train, test : sequence of paths
        Train-good images and test images.
    labels, defects : sequences of length n_test
    cfg : MapConfig
    cache_dir : str or Path
    threads : int or None
        Thread cap of the C++ kernels.
    batch_size : int
        Images per backbone batch.
    log : callable or None
        Receives progress lines.
    compute : bool
        False: only read the cache (:class:`FileNotFoundError` when the maps are absent).
    crossfit : bool
        False: skip the cross-fit fold banks and maps (the costly part at large maps);
        ``cal_maps``/``cal_max`` then hold ``"train"`` only, cached in a separate
        ``maps_nocf__...`` file (features and bank files are shared).
    crossfit_bank : {"coreset", "masked"}
        The bank that scores a held-out fold (the detector's parameter of the same name,
        :mod:`structcore.crossfit`). ``"coreset"`` (the harness's default, as in the issue-7
        and issue-13 runs): a fresh coreset of the other folds, cached
        (``foldbanks__...``). ``"masked"`` (the product's default): the final bank without the
        fold's rows (:func:`structcore.crossfit.masked_bank`, with the rows' sources of the
        coreset selection), scored by :func:`structcore.crossfit.crossfit_maps`, as
        :meth:`Detector.fit` does; the maps go to ``maps_masked__...``. The test maps and the
        same-train maps do not depend on it.

    Returns
    -------
    MapSet
    """
    from ..crossfit import CROSSFIT_BANKS, crossfit_maps, masked_bank
    from ..detector import Detector
    from ..memory_bank import MemoryBank

    if crossfit_bank not in CROSSFIT_BANKS:
        raise ValueError(f"crossfit_bank must be one of {CROSSFIT_BANKS}; got {crossfit_bank!r}")
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    lists = {"train": [str(p) for p in train], "test": [str(p) for p in test]}
    hf = config_hash(cfg.feature_part(), lists)
    hm = config_hash(asdict(cfg), lists)
    stem = f"{name}__{cfg.backbone}"
    f_path = cache / f"features__{stem}__{hf}.npz"
    b_path = cache / f"bank__{stem}__{hm}.npz"
    m_path = cache / f"maps__{stem}__{hm}.npz"
    if not crossfit:
        m_path = cache / f"maps_nocf__{stem}__{hm}.npz"
    elif crossfit_bank == "masked":
        m_path = cache / f"maps_masked__{stem}__{hm}.npz"
    lab = np.asarray(labels, dtype=np.int64)
    dfc = np.asarray(list(defects), dtype=str)
    if m_path.is_file():
        with np.load(m_path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            modes = ("crossfit", "train") if crossfit else ("train",)
            return MapSet(
                test_maps=z["test_maps"],
                test_max=z["test_max"],
                labels=lab,
                defects=dfc,
                cal_maps={m: z[f"cal_maps_{m}"] for m in modes},
                cal_max={m: z[f"cal_max_{m}"] for m in modes},
                folds=z["folds"],
                meta=meta,
            )
    if not compute:
        raise FileNotFoundError(f"not cached: {m_path}")

    # The maps depend on the bank, k, sigma and crop only: fit the one calibration mode the
    # fit needs ("train", one kNN pass); both modes' maps come from calibration_maps below.
    det = Detector(
        **asdict(cfg),
        calibration="train",
        # "coreset": the cross-fit maps come from fresh fold coresets (cached fold banks,
        # which the synthetic-defect calibration reuses); "masked": the product's default
        crossfit_bank=crossfit_bank,
        variants=False,
        threads=threads,
        batch_size=batch_size,
    )
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if f_path.is_file():
        with np.load(f_path, allow_pickle=False) as z:
            f_train, f_test = z["train"], z["test"]
        timings["features_loaded"] = time.perf_counter() - t0
    else:
        _log(log, f"[{stem}] features of {len(train)} train + {len(test)} test images")
        f_train = det.features(lists["train"])
        f_test = det.features(lists["test"])
        _atomic_savez(f_path, train=f_train, test=f_test)
        timings["features"] = time.perf_counter() - t0
    d = f_train.shape[-1]
    t1 = time.perf_counter()
    p = det.validate_params()
    final = load_final_bank(b_path, f_train, backend=det.backend, threads=det.threads)
    if final is None:
        _log(log, f"[{stem}] coreset bank")
        # what Detector.fit builds (Detector._build_bank), kept with the rows' sources
        final = MemoryBank.build(
            f_train,
            p["coreset_ratio"],
            projection_dim=p["projection_dim"],
            seed=p["seed"],
            backend=det.backend,
            threads=det.threads,
        )
        _atomic_savez(b_path, bank=final.vectors, sources=final.sources)
    else:
        timings["bank_cached"] = 1.0
    det.fit_features(f_train, bank=final.vectors)
    timings["fit_features"] = time.perf_counter() - t1  # bank (built or read) + fit
    cal_maps: dict[str, np.ndarray] = {}
    cal_max: dict[str, np.ndarray] = {}
    for mode in ("crossfit", "train") if crossfit else ("train",):
        t2 = time.perf_counter()
        _log(log, f"[{stem}] calibration maps ({mode})")
        if mode == "crossfit" and crossfit_bank == "masked":
            # Detector.fit's pass: crossfit_maps with the final bank minus each fold's rows
            cal_maps[mode], cal_max[mode] = crossfit_maps(
                f_train,
                folds=p["folds"],
                seed=p["seed"],
                k=p["k"],
                batch_size=p["batch_size"],
                build=lambda held: masked_bank(final, held),
                score=lambda f, b: score_with_bank(det, f, b.vectors),
            )
        elif mode == "crossfit":
            # The fold banks are cached too (synthetic-defect calibration scores with them);
            # crossfit_maps_from_banks equals det.calibration_maps(f_train, "crossfit")
            # (tests/test_research_ablation.py checks it bit for bit).
            fb_path = cache / f"foldbanks__{stem}__{hm}.npz"
            banks = load_or_compute_fold_banks(det, f_train, fb_path)
            cal_maps[mode], cal_max[mode] = crossfit_maps_from_banks(det, f_train, banks)
        else:
            cal_maps[mode], cal_max[mode] = det.calibration_maps(f_train, mode)
        timings[f"calibration_{mode}"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    _log(log, f"[{stem}] test maps")
    test_maps, test_max = det.anomaly_maps(f_test, batch_size=64)
    timings["test_maps"] = time.perf_counter() - t3
    folds = det.crossfit_folds(len(train))
    meta = {
        "config": asdict(cfg),
        "crossfit_bank": crossfit_bank if crossfit else None,
        "n_train": len(train),
        "n_test": len(test),
        "bank_rows": int(det.bank_.shape[0]),
        "feature_dim": int(d),
        "timings_s": timings,
    }
    _atomic_savez(
        m_path,
        test_maps=test_maps,
        test_max=test_max,
        folds=folds,
        meta=json.dumps(meta),
        **{f"cal_maps_{m}": v for m, v in cal_maps.items()},
        **{f"cal_max_{m}": v for m, v in cal_max.items()},
    )
    return MapSet(test_maps, test_max, lab, dfc, cal_maps, cal_max, folds, meta)


def load_or_compute_split_maps(
    name: str, split: Any, cfg: MapConfig, cache_dir: str | Path, **kwargs: Any
) -> MapSet:
    """:func:`load_or_compute_maps` of a :class:`structcore.datasets.DatasetSplit`: its train
    paths, and its test samples' images, labels and defect names; ``kwargs`` as there."""
    test = split.test
    return load_or_compute_maps(
        name,
        split.train,
        [s.image for s in test],
        [s.label for s in test],
        [s.defect for s in test],
        cfg,
        cache_dir,
        **kwargs,
    )


def _cache_path(
    kind: str,
    name: str,
    train: Sequence[str | Path],
    test: Sequence[str | Path],
    cfg: MapConfig,
    cache_dir: str | Path,
) -> Path:
    """``<cache_dir>/<kind>__<name>__<backbone>__<hash of cfg and the image lists>.npz``."""
    lists = {"train": [str(p) for p in train], "test": [str(p) for p in test]}
    hm = config_hash(asdict(cfg), lists)
    return Path(cache_dir) / f"{kind}__{name}__{cfg.backbone}__{hm}.npz"


def bank_path(
    name: str,
    train: Sequence[str | Path],
    test: Sequence[str | Path],
    cfg: MapConfig,
    cache_dir: str | Path,
) -> Path:
    """Cache file of the final bank of a data set (see :func:`load_or_compute_maps`)."""
    return _cache_path("bank", name, train, test, cfg, cache_dir)


def load_final_bank(
    path: str | Path,
    f_train: np.ndarray | None = None,
    *,
    backend: str = "cpp",
    threads: int | None = None,
) -> Any:
    """The cached final bank as a :class:`~structcore.memory_bank.MemoryBank` with
    ``sources`` (the train image of each row), or None when ``path`` does not exist.

    A bank file written before the sources were stored gets them from
    :func:`structcore.crossfit.locate_rows` on ``f_train`` (what the detector does for a bank
    given from outside; it can differ from the coreset's own sources only where two train
    images hold bit-identical patch vectors).
    """
    from ..crossfit import locate_rows
    from ..memory_bank import MemoryBank

    path = Path(path)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        vectors = z["bank"]
        sources = z["sources"] if "sources" in z.files else None
    if sources is None:
        if f_train is None:
            raise ValueError(f"{path} has no row sources; pass the train features")
        sources = locate_rows(vectors, f_train)
    return MemoryBank(vectors, backend=backend, threads=threads, sources=sources)


def fold_banks_path(
    name: str,
    train: Sequence[str | Path],
    test: Sequence[str | Path],
    cfg: MapConfig,
    cache_dir: str | Path,
) -> Path:
    """Cache file of the cross-fit fold banks of a data set (see :func:`load_or_compute_maps`)."""
    return _cache_path("foldbanks", name, train, test, cfg, cache_dir)


def load_or_compute_fold_banks(det: Any, f_train: np.ndarray, path: str | Path) -> list[np.ndarray]:
    """The ``folds`` cross-fit banks of a detector's train features, cached at ``path``.

    Bank ``i`` is built exactly as :meth:`Detector.calibration_maps` builds it for fold ``i``
    (:func:`structcore.crossfit.fold_parts`; :meth:`MemoryBank.build` with the detector's
    ``coreset_ratio``, ``projection_dim``, ``seed``, ``backend`` and ``threads``) from the
    features of every image outside fold ``i``.

    Parameters
    ----------
    det : structcore.Detector
        Fitted (or at least configured) detector; only its parameters are used.
    f_train : ndarray (N, h, w, D), float32
        Train features in fit order.
    path : str or Path

    Returns
    -------
    list of ``folds`` ndarrays (n_bank_i, D), float32
    """
    from ..crossfit import fold_parts
    from ..memory_bank import MemoryBank

    path = Path(path)
    p = det.validate_params()
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return [z[f"bank{i}"] for i in range(p["folds"])]
    perm, parts = fold_parts(f_train.shape[0], p["folds"], p["seed"])
    banks = [
        MemoryBank.build(
            f_train[np.setdiff1d(perm, held)],
            p["coreset_ratio"],
            projection_dim=p["projection_dim"],
            seed=p["seed"],
            backend=det.backend,
            threads=det.threads,
        ).vectors
        for held in parts
    ]
    _atomic_savez(path, **{f"bank{i}": b for i, b in enumerate(banks)})
    return banks


def score_with_bank(
    det: Any, features: np.ndarray, bank: np.ndarray, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Maps (n, crop, crop) float32 and max (n,) of ``features`` against ``bank``.

    The detector's map stage (:meth:`MemoryBank.search` with ``k``, :class:`AnomalyMapper`
    with ``crop`` and ``sigma``, max pooling); PatchCore's reweighting is not applied.
    """
    from ..maps import AnomalyMapper
    from ..memory_bank import MemoryBank

    mb = MemoryBank(
        np.ascontiguousarray(bank, dtype=np.float32), backend=det.backend, threads=det.threads
    )
    mapper = AnomalyMapper(
        int(det.crop), float(det.sigma), backend=det.backend, threads=det.threads
    )
    n = features.shape[0]
    maps = np.empty((n, int(det.crop), int(det.crop)), dtype=np.float32)
    smax = np.empty(n, dtype=np.float64)
    for s in range(0, n, batch_size):
        f = np.ascontiguousarray(features[s : s + batch_size], dtype=np.float32)
        scores, _ = mb.search(f, int(det.k))
        m = mapper(scores)
        maps[s : s + batch_size] = m
        smax[s : s + batch_size] = mapper.max_scores(m)
    return maps, smax


def crossfit_maps_from_banks(
    det: Any, f_train: np.ndarray, banks: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Cross-fitted calibration maps from the fold banks (= ``det.calibration_maps(f, "crossfit")``,
    bit for bit).

    Parameters
    ----------
    det : structcore.Detector
    f_train : ndarray (N, h, w, D), float32
    banks : the :func:`load_or_compute_fold_banks` banks

    Returns
    -------
    maps : ndarray (N, crop, crop), float32
    score_max : ndarray (N,), float64
    """
    folds = det.crossfit_folds(f_train.shape[0])
    n = f_train.shape[0]
    maps = np.empty((n, int(det.crop), int(det.crop)), dtype=np.float32)
    smax = np.empty(n, dtype=np.float64)
    for i, b in enumerate(banks):
        idx = np.flatnonzero(folds == i)
        maps[idx], smax[idx] = score_with_bank(det, f_train[idx], b)
    return maps, smax


# --------------------------------------------------------------------------- AUROC + bootstrap


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Image AUROC (Mann-Whitney U with average ranks for ties).

    Parameters
    ----------
    labels : ndarray (n,), 0/1 with both classes present
    scores : ndarray (n,), finite

    Returns
    -------
    float in [0, 1]
    """
    return float(auroc_matrix(np.asarray(labels), np.asarray(scores)[:, None])[0])


def auroc_matrix(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of every column of ``scores``.

    Parameters
    ----------
    labels : ndarray (n,), 0/1, both classes present
    scores : ndarray (n, m), finite

    Returns
    -------
    ndarray (m,), float64
    """
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        raise ValueError("labels: AUROC needs both classes")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    r = rankdata(s, axis=0)
    return (r[y].sum(axis=0) - n1 * (n1 + 1) / 2.0) / (n1 * n0)


def _auroc_resampled(s: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUROC per row of index resamples: ``pos``/``neg`` (B, n1)/(B, n0) indices into ``s``."""
    sp = s[pos]
    sn = s[neg]
    n1 = pos.shape[1]
    n0 = neg.shape[1]
    r = rankdata(np.concatenate([sp, sn], axis=1), axis=1)
    return (r[:, :n1].sum(axis=1) - n1 * (n1 + 1) / 2.0) / (n1 * n0)


def paired_bootstrap(
    labels: np.ndarray,
    scores: Mapping[str, np.ndarray],
    reference: str = "max",
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, dict[str, float]]:
    """AUROC of every score and a paired bootstrap interval of its difference to ``reference``.

    Resampling is stratified (good and defective test images are resampled with replacement
    separately, so every resample has the original class counts) and paired (the same
    resampled images score every variant). The interval is the percentile interval of the
    ``resamples`` differences.

    Parameters
    ----------
    labels : ndarray (n,), 0/1
    scores : mapping of str to ndarray (n,)
        Must contain ``reference``.
    reference : str
    resamples : int
    seed : int
        Seed of ``numpy.random.default_rng``.
    level : float in (0, 1)

    Returns
    -------
    dict of str to dict
        Per score: ``auroc``, ``delta`` (auroc - reference auroc), ``lo``, ``hi`` (interval of
        the delta) and ``p_le0`` (fraction of resamples with delta <= 0).
    """
    if reference not in scores:
        raise ValueError(f"scores must contain the reference {reference!r}")
    y = np.asarray(labels).astype(bool)
    ipos = np.flatnonzero(y)
    ineg = np.flatnonzero(~y)
    if ipos.size == 0 or ineg.size == 0:
        raise ValueError("labels: AUROC needs both classes")
    rng = np.random.default_rng(seed)
    pos = ipos[rng.integers(0, ipos.size, size=(resamples, ipos.size))]
    neg = ineg[rng.integers(0, ineg.size, size=(resamples, ineg.size))]
    ref = np.asarray(scores[reference], dtype=np.float64)
    ref_point = auroc(y, ref)
    ref_boot = _auroc_resampled(ref, pos, neg)
    a = (1.0 - level) / 2.0
    out: dict[str, dict[str, float]] = {}
    for key, val in scores.items():
        s = np.asarray(val, dtype=np.float64)
        point = auroc(y, s)
        same = key == reference
        diff = np.zeros(resamples) if same else _auroc_resampled(s, pos, neg) - ref_boot
        out[key] = {
            "auroc": point,
            "delta": point - ref_point,
            "lo": float(np.quantile(diff, a)),
            "hi": float(np.quantile(diff, 1.0 - a)),
            "p_le0": float(np.mean(diff <= 0.0)),
        }
    return out


# --------------------------------------------------------------------------- selection


def select_leave_one_out(
    deltas: Mapping[str, Mapping[str, float]],
    groups: Mapping[str, str],
    *,
    tolerance: float = 0.005,
    candidates: Sequence[str] | None = None,
    rule: str = "tolerance",
) -> dict[str, dict[str, Any]]:
    """Pick a variant for each held-out set using only the other sets' results.

    For held-out set ``h``, the selection sets are every set whose group differs from
    ``h``'s group (sets of one group share images, e.g. the Magnetic Tile defect classes share
    their good test images). Among ``candidates``:

    * ``rule="tolerance"``: keep the variants whose worst delta on the selection sets is
      >= ``-tolerance``; pick the one with the largest mean delta among them; if none
      qualifies, pick the one with the largest worst delta;
    * ``rule="minimax"``: the largest worst delta, then the largest mean delta.

    Ties: first in ``candidates`` order.

    Parameters
    ----------
    deltas : mapping set -> (variant -> AUROC delta to max pooling)
    groups : mapping set -> group name
    tolerance : float
    candidates : sequence of str or None
        Variants eligible (default: all variants of the first set).
    rule : {"tolerance", "minimax"}

    Returns
    -------
    dict of set -> dict
        ``variant`` (chosen), ``selection_sets``, ``selection_mean``, ``selection_min``,
        ``held_out_delta`` (the chosen variant's delta on the held-out set).
    """
    if rule not in ("tolerance", "minimax"):
        raise ValueError(f"rule must be 'tolerance' or 'minimax'; got {rule!r}")
    sets = list(deltas)
    cands = list(candidates) if candidates is not None else list(deltas[sets[0]])
    out: dict[str, dict[str, Any]] = {}
    for h in sets:
        sel = [s for s in sets if groups[s] != groups[h]]
        if not sel:
            raise ValueError(f"no selection sets left when holding out {h!r}")
        stats: dict[str, tuple[float, float]] = {}
        for c in cands:
            vals = np.array([deltas[s][c] for s in sel])
            stats[c] = (float(vals.mean()), float(vals.min()))
        ok = [c for c in cands if stats[c][1] >= -tolerance]
        if rule == "minimax":
            chosen = max(cands, key=lambda c: (stats[c][1], stats[c][0], -cands.index(c)))
        elif ok:
            chosen = max(ok, key=lambda c: (stats[c][0], -cands.index(c)))
        else:
            chosen = max(cands, key=lambda c: (stats[c][1], -cands.index(c)))
        out[h] = {
            "variant": chosen,
            "selection_sets": sel,
            "selection_mean": stats[chosen][0],
            "selection_min": stats[chosen][1],
            "qualified": bool(ok),
            "held_out_delta": float(deltas[h][chosen]),
        }
    return out


#: Allowed loss to max pooling on any set (issue 13's goal and the selection's tolerance).
FAMILY_TOLERANCE = 0.005


def family_stats(
    deltas: Mapping[str, Mapping[str, float]], family: Mapping[str, str], variant: str
) -> tuple[float, float]:
    """(family-weighted mean, worst per-set) delta of ``variant`` over the sets of ``deltas``.

    The family-weighted mean is the mean over families of the mean over each family's sets,
    so a family seen through many overlapping sets (Magnetic Tile's five classes) counts
    once.
    """
    fams: dict[str, list[float]] = {}
    for s, d in deltas.items():
        fams.setdefault(family[s], []).append(float(d[variant]))
    mean = float(np.mean([np.mean(v) for v in fams.values()]))
    worst = float(min(min(v) for v in fams.values()))
    return mean, worst


def select_leave_one_family_out(
    deltas: Mapping[str, Mapping[str, float]],
    family: Mapping[str, str],
    *,
    tolerance: float = FAMILY_TOLERANCE,
    candidates: Sequence[str] | None = None,
    rule: str = "tolerance",
) -> dict[str, dict[str, Any]]:
    """Issue 13's rule, declared before the results: pick a variant per held-out *family*.

    For held-out family ``F`` only the sets of the other families are looked at. Per
    candidate: the family-weighted mean delta (:func:`family_stats`) and the worst per-set
    delta on those sets.

    * ``rule="tolerance"`` (primary): among candidates whose worst per-set delta is
      ``>= -tolerance``, the largest family-weighted mean; none qualifies: the largest worst;
    * ``rule="minimax"`` (secondary, reported beside it): the largest worst, then the mean.

    Ties: first in ``candidates`` order (``max`` first).

    Parameters
    ----------
    deltas : mapping set -> (variant -> AUROC delta to max pooling)
    family : mapping set -> family name
    tolerance : float
    candidates : sequence of str or None (default: the variants of the first set)
    rule : {"tolerance", "minimax"}

    Returns
    -------
    dict family -> dict
        ``variant``, ``selection_families``, ``selection_mean``, ``selection_min``,
        ``qualified``, ``held_out`` (set -> delta of the chosen variant on the held-out
        family's sets), ``held_out_mean`` (their mean), ``held_out_min``.
    """
    if rule not in ("tolerance", "minimax"):
        raise ValueError(f"rule must be 'tolerance' or 'minimax'; got {rule!r}")
    sets = list(deltas)
    cands = list(candidates) if candidates is not None else list(deltas[sets[0]])
    fams = list(dict.fromkeys(family[s] for s in sets))
    if len(fams) < 2:
        raise ValueError("leave-one-family-out needs at least two families")
    out: dict[str, dict[str, Any]] = {}
    for f in fams:
        sel = {s: deltas[s] for s in sets if family[s] != f}
        stats = {c: family_stats(sel, family, c) for c in cands}
        ok = [c for c in cands if stats[c][1] >= -tolerance]
        if rule == "minimax":
            chosen = max(cands, key=lambda c: (stats[c][1], stats[c][0], -cands.index(c)))
        elif ok:
            chosen = max(ok, key=lambda c: (stats[c][0], -cands.index(c)))
        else:
            chosen = max(cands, key=lambda c: (stats[c][1], -cands.index(c)))
        held = {s: float(deltas[s][chosen]) for s in sets if family[s] == f}
        out[f] = {
            "variant": chosen,
            "selection_families": sorted({family[s] for s in sel}),
            "selection_mean": stats[chosen][0],
            "selection_min": stats[chosen][1],
            "qualified": bool(ok),
            "held_out": held,
            "held_out_mean": float(np.mean(list(held.values()))),
            "held_out_min": float(min(held.values())),
        }
    return out


#: Issue 13's goal on the held-out real families: family-weighted mean delta at least this
#: (and no set below ``-FAMILY_TOLERANCE``).
GOAL_MEAN = 0.01


def held_out_goal(
    selection: Mapping[str, Mapping[str, Any]],
    rule: str,
    *,
    exclude: Sequence[str] = ("synthetic",),
) -> tuple[dict[str, Any], str] | None:
    """Issue 13's goal on a :func:`select_leave_one_family_out` result, over the held-out
    families not in ``exclude`` (the real ones).

    Returns
    -------
    (summary, line) or None
        ``summary``: ``mean_real`` (mean of the families' ``held_out_mean``), ``worst_real``
        (worst ``held_out_min``), ``met`` (``worst_real >= -FAMILY_TOLERANCE`` and
        ``mean_real >= GOAL_MEAN``); ``line``: the report sentence for rule ``rule``. None
        when every family is excluded.
    """
    real = [f for f in selection if f not in exclude]
    if not real:
        return None
    mean_real = float(np.mean([selection[f]["held_out_mean"] for f in real]))
    worst_real = float(min(selection[f]["held_out_min"] for f in real))
    met = worst_real >= -FAMILY_TOLERANCE and mean_real >= GOAL_MEAN
    line = (
        f"\nheld-out ({rule}), real families: mean {mean_real:+.4f}, worst set "
        f"{worst_real:+.4f}; goal (worst >= {-FAMILY_TOLERANCE}, mean >= +{GOAL_MEAN}) "
        f"{'MET' if met else 'NOT met'}"
    )
    return {"mean_real": mean_real, "worst_real": worst_real, "met": met}, line


# --------------------------------------------------------------------------- report


def _split_key(key: str) -> tuple[str, str]:
    s, _, b = key.partition("/")
    return s, b


def report(
    results: Mapping[str, Mapping[str, Mapping[str, float]]],
    *,
    tolerance: float = 0.005,
    exclude_from_selection: Sequence[str] = ("mtd",),
) -> dict[str, Any]:
    """Markdown tables and the leave-one-set-out selection of a default variant.

    Parameters
    ----------
    results : mapping ``"{set}/{backbone}"`` -> variant -> :func:`paired_bootstrap` entry
    tolerance : float
        Allowed loss to max pooling in the selection rule (:func:`select_leave_one_out`).
    exclude_from_selection : sequence of str
        Sets left out of the selection (``"mtd"``: the union of the Magnetic Tile classes,
        whose images are those of the per-class sets).

    Returns
    -------
    dict with ``markdown`` (str) and ``selection`` (per held-out key, see
    :func:`select_leave_one_out`; the group of a key is its set, so one set is held out
    with all its backbones).
    """
    keys = list(results)
    sets = list(dict.fromkeys(_split_key(k)[0] for k in keys))
    bbs = list(dict.fromkeys(_split_key(k)[1] for k in keys))
    variants = list(results[keys[0]])
    lines: list[str] = []
    for bb in bbs:
        cols = [s for s in sets if f"{s}/{bb}" in results]
        lines.append(f"\n### {bb}: image AUROC of max; per variant delta to max [95% CI]\n")
        lines.append("| variant | " + " | ".join(cols) + " | mean delta |")
        lines.append("|---|" + "---|" * (len(cols) + 1))
        for v in variants:
            cells = []
            ds = []
            for s in cols:
                r = results[f"{s}/{bb}"][v]
                if v == "max":
                    cells.append(f"{r['auroc']:.3f}")
                else:
                    mark = "+" if r["lo"] > 0 else ("-" if r["hi"] < 0 else "")
                    cells.append(f"{r['delta']:+.3f} [{r['lo']:+.3f},{r['hi']:+.3f}]{mark}")
                    ds.append(r["delta"])
            mean = f"{np.mean(ds):+.4f}" if ds else ""
            lines.append(f"| {v} | " + " | ".join(cells) + f" | {mean} |")
    sel_keys = [k for k in keys if _split_key(k)[0] not in set(exclude_from_selection)]
    deltas = {k: {v: results[k][v]["delta"] for v in variants} for k in sel_keys}
    groups = {k: _split_key(k)[0] for k in sel_keys}
    if len(set(groups.values())) < 2:
        lines.append("\n(leave-one-set-out selection needs at least two sets)")
        return {"markdown": "\n".join(lines), "selection": {}}
    selection: dict[str, Any] = {}
    for rule in ("tolerance", "minimax"):
        sel = select_leave_one_out(
            deltas, groups, tolerance=tolerance, candidates=variants, rule=rule
        )
        selection[rule] = sel
        lines.append(
            f"\n### Leave-one-set-out choice, rule {rule!r} (picked on the other sets, "
            "all backbones)\n"
        )
        lines.append(
            "| held out | chosen | mean delta on selection sets | worst | held-out delta |"
        )
        lines.append("|---|---|---|---|---|")
        for k, r in sel.items():
            lines.append(
                f"| {k} | {r['variant']} | {r['selection_mean']:+.4f} | "
                f"{r['selection_min']:+.4f} | {r['held_out_delta']:+.4f} |"
            )
        held = np.array([r["held_out_delta"] for r in sel.values()])
        lines.append(
            f"\nheld-out deltas ({rule}): mean {held.mean():+.4f}, worst {held.min():+.4f}, "
            f"{int(np.sum(held < -tolerance))} of {held.size} below -{tolerance}"
        )
    lines.append("\n### Every variant on every selection set: mean and worst delta\n")
    lines.append("| variant | mean delta | worst delta | sets below -tolerance |")
    lines.append("|---|---|---|---|")
    for v in variants:
        vals = np.array([deltas[k][v] for k in sel_keys])
        lines.append(
            f"| {v} | {vals.mean():+.4f} | {vals.min():+.4f} | {int(np.sum(vals < -tolerance))} |"
        )
    return {"markdown": "\n".join(lines), "selection": selection}
