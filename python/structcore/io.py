"""Saving and loading fitted detectors: one ``.npz`` file, no pickle.

Format ``structcore.detector``, version 1. The file is a NumPy ``.npz`` archive (a ZIP of
``.npy`` files, written by :func:`numpy.savez`, uncompressed) with these entries:

=========================  =================  ===============================================
entry                      dtype, shape       content
=========================  =================  ===============================================
``metadata``               uint8 (n_bytes,)   UTF-8 JSON document (below)
``bank``                   float32 (M, D)     the memory bank, one patch vector per row
``mu``                     float64 (F,)       calibration mean of each configured component
``sigma``                  float64 (F,)       calibration std (after the floor)
``train_phi.<mode>``       float64 (N, F_s)   descriptors of the calibration maps of each
                                              fitted mode (``crossfit``, ``train``), columns
                                              in ``stored_components`` order
``train_max.<mode>``       float64 (N,)       their max scores
=========================  =================  ===============================================

The JSON metadata holds: ``format`` (``"structcore.detector"``), ``version`` (1),
``structcore_version``, ``config`` (every constructor parameter of the detector),
``backbone``, ``layers``, ``weights_sha256`` (see
:attr:`structcore.features.FeatureExtractor.weights_sha256`), ``feature_dim``,
``feature_grid`` ([h, w]), ``components`` (configured descriptor), ``stored_components``,
``calibration`` (the configured mode), ``calibration_modes`` (the fitted ones),
``fitted`` (``lambda``, ``decision_threshold``, ``pixel_threshold``, ``pixel_thresholds``
per mode, ``n_train``), ``arrays`` (name -> ``{"dtype": "<f4", "shape": [...]}`` for every
array entry) and ``checksum``: SHA-256 over the arrays in sorted name order, each
contributing ``name``, ``"|"``, dtype string, ``"|"``, comma-separated shape, ``"|"``, then
its C-order bytes (little-endian). Floats in JSON are written with Python's shortest
round-trip representation, so they load bit-exactly.

The backbone's weights are not stored: loading rebuilds the backbone from ``config`` (or the
``weights`` override) and checks its hash. A reader in another language needs only a ZIP
reader, the ``.npy`` header format and a JSON parser.

Any file that is truncated, tampered with (checksum), of another format or version, or whose
arrays do not match the metadata raises one :class:`ValueError` saying so.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .detector import Detector

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "array_checksum", "load_detector", "save_detector"]

FORMAT_NAME = "structcore.detector"
FORMAT_VERSION = 1


def array_checksum(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of the array payload (see the module docstring for the exact byte stream)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        shape = ",".join(str(s) for s in a.shape)
        h.update(f"{name}|{a.dtype.str}|{shape}|".encode())
        h.update(a.tobytes(order="C"))
    return h.hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def save_detector(det: Detector, path: str | os.PathLike[str]) -> None:
    """Write ``det`` (fitted) to ``path``; the file name is used as given."""
    from . import __version__

    det._check_fitted()
    arrays: dict[str, np.ndarray] = {
        "bank": np.ascontiguousarray(det.bank_, dtype=np.float32),
        "mu": np.asarray(det.mu_, dtype=np.float64),
        "sigma": np.asarray(det.sigma_, dtype=np.float64),
    }
    for mode in det.calibration_modes_:
        arrays[f"train_phi.{mode}"] = np.asarray(det.train_phi_[mode], dtype=np.float64)
        arrays[f"train_max.{mode}"] = np.asarray(det.train_max_[mode], dtype=np.float64)
    config = {k: _jsonable(v) for k, v in det.get_params().items()}
    config["device"] = str(config["device"])
    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "structcore_version": __version__,
        "config": config,
        "backbone": det.backbone,
        "layers": list(det.extractor_.layers),
        "weights_sha256": det.weights_sha256_,
        "feature_dim": det.feature_dim_,
        "feature_grid": list(det.feature_grid_),
        "components": list(det.components_),
        "stored_components": list(det.stored_components_),
        "calibration": det.calibration,
        "calibration_modes": list(det.calibration_modes_),
        "fitted": {
            "lambda": float(det.lambda_),
            "decision_threshold": float(det.decision_threshold_),
            "pixel_threshold": float(det.pixel_threshold_),
            "pixel_thresholds": {m: float(t) for m, t in det.pixel_thresholds_.items()},
            "n_train": int(det.n_train_),
        },
        "arrays": {n: {"dtype": a.dtype.str, "shape": list(a.shape)} for n, a in arrays.items()},
        "checksum": array_checksum(arrays),
    }
    try:
        text = json.dumps(meta, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot save: a setting is not JSON-serialisable ({exc})") from exc
    payload = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    with open(os.fspath(path), "wb") as fh:
        np.savez(fh, metadata=payload, **arrays)


def _bad(path: object, why: str) -> ValueError:
    return ValueError(f"{os.fspath(path)!s} is not a valid structcore detector file: {why}")  # type: ignore[arg-type]


def _read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"detector file not found: {p!r}")
    try:
        with np.load(p, allow_pickle=False) as npz:
            contents = {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise _bad(p, f"cannot read it as an .npz archive ({type(exc).__name__}: {exc})") from exc
    if "metadata" not in contents:
        raise _bad(p, "no 'metadata' entry")
    raw = contents.pop("metadata")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise _bad(p, "the metadata entry is not a UTF-8 byte array")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(p, f"the metadata is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise _bad(
            p,
            f"format is {meta.get('format') if isinstance(meta, dict) else None!r}, "
            f"expected {FORMAT_NAME!r}",
        )
    if meta.get("version") != FORMAT_VERSION:
        raise _bad(
            p,
            f"format version {meta.get('version')!r} is not supported by this structcore "
            f"(reads version {FORMAT_VERSION})",
        )
    declared = meta.get("arrays")
    if not isinstance(declared, dict) or set(declared) != set(contents):
        got = sorted(contents)
        want = sorted(declared) if isinstance(declared, dict) else None
        raise _bad(p, f"array entries {got} do not match the metadata's {want}")
    for name, spec in declared.items():
        a = contents[name]
        if (
            not isinstance(spec, dict)
            or a.dtype.str != spec.get("dtype")
            or list(a.shape) != spec.get("shape")
        ):
            raise _bad(
                p,
                f"array {name!r} has dtype {a.dtype.str} shape {list(a.shape)}, metadata says "
                f"{spec}",
            )
    if array_checksum(contents) != meta.get("checksum"):
        raise _bad(p, "checksum mismatch (the arrays were modified or corrupted)")
    return meta, contents


def load_detector(
    cls: type[Detector],
    path: str | os.PathLike[str],
    *,
    weights: object = "config",
    device: object = None,
) -> Detector:
    """Read a file written by :func:`save_detector`; see :meth:`Detector.load`."""
    from .calibration import StructCalibrator
    from .features import FeatureExtractor

    meta, arrays = _read(path)
    try:
        config = dict(meta["config"])
        det = cls(**config)
        if weights != "config":
            det.weights = weights  # type: ignore[assignment]
        if device is not None:
            det.device = device  # type: ignore[assignment]
        p = det._validated()
        comps = tuple(meta["components"])
        stored = tuple(meta["stored_components"])
        modes = tuple(meta["calibration_modes"])
        fitted = meta["fitted"]
        grid = tuple(int(v) for v in meta["feature_grid"])
        fdim = int(meta["feature_dim"])
        n_train = int(fitted["n_train"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(path, f"inconsistent metadata ({type(exc).__name__}: {exc})") from exc

    bank, mu, sigma = arrays["bank"], arrays["mu"], arrays["sigma"]
    checks = [
        (bank.ndim == 2 and bank.shape[1] == fdim and bank.dtype == np.float32, "bank"),
        (mu.shape == (len(comps),) and sigma.shape == (len(comps),), "mu/sigma"),
        (bool(np.all(sigma > 0)) and bool(np.isfinite(mu).all()), "sigma must be > 0"),
        (set(comps) <= set(stored) and p["calibration"] in modes, "components/modes"),
    ]
    for mode in modes:
        phi = arrays.get(f"train_phi.{mode}")
        mx = arrays.get(f"train_max.{mode}")
        checks.append(
            (
                phi is not None
                and mx is not None
                and phi.shape == (n_train, len(stored))
                and mx.shape == (n_train,),
                f"train arrays of mode {mode!r}",
            )
        )
    for ok, what in checks:
        if not ok:
            raise _bad(path, f"arrays inconsistent with the metadata ({what})")

    extractor = FeatureExtractor(
        det.backbone, meta["layers"], det.weights, p["dim"], det.device, p["seed"]
    )
    if extractor.weights_sha256 != meta["weights_sha256"]:
        raise ValueError(
            f"the backbone weights ({det.weights!r}, sha256 {extractor.weights_sha256[:12]}...) "
            f"differ from those the detector was fitted with (sha256 "
            f"{str(meta['weights_sha256'])[:12]}...); pass Detector.load(path, weights=...) "
            "with the original weights"
        )
    det.extractor_ = extractor
    det.bank_ = np.ascontiguousarray(bank)
    det.components_ = comps
    det.stored_components_ = stored
    det.calibration_modes_ = modes
    det.pixel_thresholds_ = {m: float(fitted["pixel_thresholds"][m]) for m in modes}
    det.train_phi_ = {m: arrays[f"train_phi.{m}"] for m in modes}
    det.train_max_ = {m: arrays[f"train_max.{m}"] for m in modes}
    det.feature_grid_ = (grid[0], grid[1])
    det.feature_dim_ = fdim
    det.n_train_ = n_train
    det.weights_sha256_ = extractor.weights_sha256
    cal = StructCalibrator(det.norm, det.lam, det.threshold_quantile, names=comps)
    cal._restore(mu, sigma, float(fitted["lambda"]), float(fitted["decision_threshold"]))
    det.calibrator_ = cal
    det.pixel_threshold_ = float(fitted["pixel_threshold"])
    det.mu_ = cal.mu_
    det.sigma_ = cal.sigma_
    det.lambda_ = cal.lambda_
    det.decision_threshold_ = cal.decision_threshold_
    return det
