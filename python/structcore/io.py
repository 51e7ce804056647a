"""Saving and loading fitted detectors: one ``.npz`` file, no pickle, no code execution.

Format ``structcore.detector``, version 2 or 3. The file is a NumPy ``.npz`` archive (a ZIP
of ``.npy`` files, written by :func:`numpy.savez`, uncompressed) with these entries:

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
``weights``                float64 (F,)       version 3, ``calibration="synthetic"`` only:
                                              the learned weights ``a`` of the score
                                              ``max + sum_j a_j (phi_j - mu_j) / sigma_j``
=========================  =================  ===============================================

Version 3 is version 2 plus the ``weights`` entry; :func:`write_state` writes version 3 only
for a model that has weights (``calibration="synthetic"``) and version 2 otherwise, so that
readers of version 2 (older structcore, older C++ ``Scorer`` builds) still read every model
that does not need the learned score, and refuse the ones that do instead of scoring them
with ``max + lambda * D``. A file holds ``weights`` exactly when its ``calibration`` is
``"synthetic"`` (whose maps are the ``crossfit`` ones: ``calibration_modes`` must hold it),
and only in version 3; the entry must be finite, one value per configured component.

The JSON metadata holds: ``format`` (``"structcore.detector"``), ``version`` (2 or 3),
``structcore_version``, ``config`` (every constructor parameter of the detector),
``backbone``, ``layers``, ``weights_sha256`` (see
:attr:`structcore.features.FeatureExtractor.weights_sha256`), ``feature_dim``,
``feature_grid`` ([h, w]), ``components`` (configured descriptor), ``stored_components``,
``calibration`` (the configured mode), ``calibration_modes`` (the fitted maps: ``crossfit``,
``train``), ``fitted`` (``lambda``: 0 for ``"synthetic"``, ``decision_threshold``,
``pixel_threshold``, ``pixel_thresholds`` per mode, ``n_train``), ``arrays`` (name ->
``{"dtype": "<f4", "shape": [...]}`` for every array entry) and ``checksum``: SHA-256 over
the whole payload (:func:`seal_metadata`): first the stored metadata bytes with the
checksum's 64 hex digits (which occur exactly once) replaced by ``0`` characters, then
``"\\n"``, then the arrays in sorted name order, each contributing ``name``, ``"|"``, dtype
string, ``"|"``, comma-separated shape, ``"|"``, then its C-order bytes (little-endian).
Version 1 files (the same layout, with a checksum over the arrays only,
:func:`array_checksum`) are still read.
Floats in JSON are written with Python's shortest round-trip representation, so they load
bit-exactly; NaN and infinities are refused on both sides.

The backbone's weights are not stored: loading rebuilds the backbone from ``config`` (or the
``weights`` override) and checks its hash; weight files are read with
``torch.load(weights_only=True)``. A reader in another language needs only a ZIP reader, the
``.npy`` header format and a JSON parser.

Reading never unpickles, never evaluates anything from the file, and allocates no more than
the sizes the archive declares, which are checked first: at most :data:`MAX_ENTRIES` entries,
:data:`MAX_METADATA_BYTES` of JSON and :data:`MAX_FILE_BYTES` of arrays in all; dtypes only
``<f4``, ``<f8`` and ``|u1``; each ``.npy`` header must describe exactly the bytes its entry
holds. Any file that is truncated, corrupted or tampered with (checksum), of another format
or version, over a limit, or whose arrays or metadata are inconsistent raises one
:class:`ValueError` saying so (its message starts with the path and
``is not a valid structcore detector file``). A missing file raises
:class:`FileNotFoundError`; weights that do not match raise :class:`ValueError` too.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from .calibration import MAP_MODES, map_mode

__all__ = [
    "BASE_VERSION",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_ENTRIES",
    "MAX_FILE_BYTES",
    "MAX_METADATA_BYTES",
    "READABLE_VERSIONS",
    "DetectorState",
    "InvalidModelFile",
    "SharedArrayMismatch",
    "array_checksum",
    "invalid_file_error",
    "read_model_file",
    "read_state",
    "seal_metadata",
    "write_state",
]

FORMAT_NAME = "structcore.detector"
#: Newest version, written by :func:`write_state` for models with learned weights (others are
#: written as :data:`BASE_VERSION`).
FORMAT_VERSION = 3
#: Version written for models without learned weights (what older readers read).
BASE_VERSION = 2
#: Versions :func:`read_state` reads (1: checksum over the arrays only; 3: ``weights``).
READABLE_VERSIONS = (1, 2, 3)
#: Largest total size of the array entries, in bytes (8 GiB).
MAX_FILE_BYTES = 2**33
#: Largest metadata entry, in bytes (16 MiB).
MAX_METADATA_BYTES = 2**24
#: Most entries an archive may hold.
MAX_ENTRIES = 64
_DTYPES = ("<f4", "<f8", "|u1")


def array_checksum(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of the arrays alone (the version 1 checksum; see the module docstring)."""
    h = hashlib.sha256()
    _update_arrays(h, arrays)
    return h.hexdigest()


_ZERO_DIGEST = "0" * 64


def _payload_digest(text_zeroed: bytes, arrays: dict[str, np.ndarray]) -> str:
    """Version 2 checksum: SHA-256 of the metadata bytes with the checksum's 64 hex digits
    replaced by ``0``, then ``"\\n"``, then the arrays (see :func:`_update_arrays`)."""
    h = hashlib.sha256()
    h.update(text_zeroed)
    h.update(b"\n")
    _update_arrays(h, arrays)
    return h.hexdigest()


def seal_metadata(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """Serialise ``meta`` with its version 2 ``checksum`` over itself and ``arrays``.

    The checksum covers the exact bytes that are stored, so any reader (the C++ one too)
    verifies it without re-serialising JSON: it replaces the checksum's 64 hex digits, which
    occur exactly once in the document, by ``0`` and hashes the result.

    Parameters
    ----------
    meta : dict
        The JSON metadata; a ``checksum`` key, if any, is replaced.
    arrays : dict of str to ndarray
        Every array entry (not ``metadata``).

    Returns
    -------
    bytes
        The UTF-8 JSON document to store as the ``metadata`` entry.
    """
    body = {**meta, "checksum": _ZERO_DIGEST}
    text = json.dumps(body, sort_keys=True, allow_nan=False).encode("utf-8")
    zero = f'"{_ZERO_DIGEST}"'.encode()
    if text.count(zero) != 1:  # another value that is 64 zeros: the digit run must be unique
        raise ValueError("cannot save: a metadata value equals the checksum placeholder")
    return text.replace(zero, f'"{_payload_digest(text, arrays)}"'.encode())


def _update_arrays(h: Any, arrays: dict[str, np.ndarray]) -> None:
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        shape = ",".join(str(s) for s in a.shape)
        h.update(f"{name}|{a.dtype.str}|{shape}|".encode())
        h.update(a.reshape(-1).view(np.uint8).data)  # the C-order bytes, without a copy


def _jsonable(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_state(state: DetectorState, path: str | os.PathLike[str]) -> None:
    """Write a fitted detector's state to ``path`` (the file name is used as given).

    Parameters
    ----------
    state : DetectorState
        What :meth:`structcore.Detector.save` hands over (``structcore_version`` is replaced
        by this package's version).
    path : str or path-like

    Raises
    ------
    ValueError
        A setting of ``state.config`` is not JSON-serialisable (or not finite).
    """
    from . import __version__

    arrays: dict[str, np.ndarray] = {
        "bank": np.ascontiguousarray(state.bank, dtype=np.float32),
        "mu": np.asarray(state.mu, dtype=np.float64),
        "sigma": np.asarray(state.sigma, dtype=np.float64),
    }
    for mode in state.calibration_modes:
        arrays[f"train_phi.{mode}"] = np.asarray(state.train_phi[mode], dtype=np.float64)
        arrays[f"train_max.{mode}"] = np.asarray(state.train_max[mode], dtype=np.float64)
    if state.weights is not None:
        arrays["weights"] = np.asarray(state.weights, dtype=np.float64)
    config = {k: _jsonable(v) for k, v in state.config.items()}
    if "device" in config:
        config["device"] = str(config["device"])
    meta: dict[str, Any] = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION if state.weights is not None else BASE_VERSION,
        "structcore_version": __version__,
        "config": config,
        "backbone": config.get("backbone"),
        "layers": list(state.layers),
        "weights_sha256": state.weights_sha256,
        "feature_dim": int(state.feature_dim),
        "feature_grid": [int(v) for v in state.feature_grid],
        "components": list(state.components),
        "stored_components": list(state.stored_components),
        "calibration": state.calibration,
        "calibration_modes": list(state.calibration_modes),
        "fitted": {
            "lambda": float(state.lam),
            "decision_threshold": float(state.decision_threshold),
            "pixel_threshold": float(state.pixel_threshold),
            "pixel_thresholds": {m: float(t) for m, t in state.pixel_thresholds.items()},
            "n_train": int(state.n_train),
        },
        "arrays": {n: {"dtype": a.dtype.str, "shape": list(a.shape)} for n, a in arrays.items()},
    }
    try:
        text = seal_metadata(meta, arrays)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot save: a setting is not JSON-serialisable ({exc})") from exc
    payload = np.frombuffer(text, dtype=np.uint8)
    with open(os.fspath(path), "wb") as fh:
        np.savez(fh, metadata=payload, **arrays)


# ---------------------------------------------------------------------------------------------
# reading


class InvalidModelFile(Exception):
    """Why a file's content is invalid; readers turn it into :func:`invalid_file_error`.

    Raised by the checks of :func:`read_state` (and by the detector's own checks of a
    state); never escapes the public readers.
    """


_Bad = InvalidModelFile


def invalid_file_error(path: object, why: str) -> ValueError:
    """The one error every invalid model file raises: ``"<path> is not a valid structcore
    detector file: <why>"``."""
    name = os.fspath(path) if isinstance(path, (str, os.PathLike)) else str(path)
    return ValueError(f"{name!s} is not a valid structcore detector file: {why}")


_bad = invalid_file_error


def _reject_constant(token: str) -> float:
    raise _Bad(f"the metadata holds the non-finite number {token} (not allowed)")


class SharedArrayMismatch(ValueError):
    """An array passed to :func:`read_model_file` (``shared=``) is not the file's entry."""


#: Bytes compared per step when an entry is checked against a shared array.
_COMPARE_BLOCK = 1 << 20


def _compare_npy(fh: IO[bytes], name: str, nbytes: int, expect: np.ndarray) -> None:
    """Read ``nbytes`` of entry data from ``fh`` block by block and check that they equal
    ``expect``'s bytes (so the entry is verified without a private copy of it)."""
    flat = expect.reshape(-1).view(np.uint8)
    buf = np.empty(min(_COMPARE_BLOCK, max(nbytes, 1)), dtype=np.uint8)
    view = buf.data  # a writable memoryview of the block buffer
    got = 0
    while got < nbytes:
        n = fh.readinto(view[: min(len(buf), nbytes - got)])  # type: ignore[attr-defined]
        if not n:
            raise _Bad(f"entry {name!r} is truncated")
        if not np.array_equal(buf[:n], flat[got : got + n]):
            raise SharedArrayMismatch(
                f"shared array {name[: -len('.npy')]!r}: its values differ from the file's "
                f"entry (first difference within bytes {got}-{got + n})"
            )
        got += n


def _read_npy(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    budget: int,
    expect: np.ndarray | None = None,
) -> np.ndarray:
    """One ``.npy`` entry, after checking its header against the entry's declared size.

    With ``expect`` (an array the caller already holds, e.g. in shared memory), the entry's
    data are compared with it block by block and ``expect`` itself is returned: no copy of
    the entry is made. :class:`SharedArrayMismatch` when dtype, shape or bytes differ."""
    with zf.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:  # pragma: no cover - read_magic accepts only these majors today
            raise _Bad(f"entry {info.filename!r}: unsupported .npy version {version}")
        header_len = fh.tell()
        if dtype.str not in _DTYPES:
            raise _Bad(f"entry {info.filename!r} has dtype {dtype.str}; allowed: {list(_DTYPES)}")
        if fortran:
            raise _Bad(f"entry {info.filename!r} is Fortran-ordered (C order expected)")
        if not isinstance(shape, tuple) or len(shape) > 8:
            raise _Bad(f"entry {info.filename!r} has an invalid shape {shape!r}")
        count = 1
        for s in shape:
            if not isinstance(s, int) or s < 0:
                raise _Bad(f"entry {info.filename!r} has an invalid shape {shape!r}")
            count *= s
        nbytes = count * dtype.itemsize
        if nbytes > budget:
            raise _Bad(
                f"entry {info.filename!r} declares {nbytes} bytes, above the limit "
                f"({budget} bytes left of MAX_FILE_BYTES = {MAX_FILE_BYTES})"
            )
        if header_len + nbytes != info.file_size:
            raise _Bad(
                f"entry {info.filename!r}: its header declares {nbytes} bytes of data but the "
                f"entry holds {info.file_size - header_len} (truncated or corrupted)"
            )
        if expect is not None:
            if expect.dtype.str != dtype.str or expect.shape != shape:
                raise SharedArrayMismatch(
                    f"shared array {info.filename[: -len('.npy')]!r} has dtype "
                    f"{expect.dtype.str} shape {list(expect.shape)}; the file's entry "
                    f"{dtype.str} {list(shape)}"
                )
            _compare_npy(fh, info.filename, nbytes, expect)
            if fh.read(1):  # reads to the end, so the ZIP CRC is verified
                raise _Bad(f"entry {info.filename!r} holds more data than its header declares")
            return expect
        arr = np.empty(shape, dtype=dtype)
        view = memoryview(arr.reshape(-1).view(np.uint8)) if count else memoryview(b"")
        got = 0
        while got < nbytes:
            n = fh.readinto(view[got:])  # type: ignore[attr-defined]
            if not n:
                raise _Bad(f"entry {info.filename!r} is truncated")
            got += n
        if fh.read(1):  # reads to the end, so the ZIP CRC is verified
            raise _Bad(f"entry {info.filename!r} holds more data than its header declares")
    return arr


def _read_archive(
    fileobj: IO[bytes],
    shared: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray], bytes]:
    shared = shared or {}
    with zipfile.ZipFile(fileobj) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_ENTRIES:
            raise _Bad(f"{len(infos)} archive entries, above the limit MAX_ENTRIES = {MAX_ENTRIES}")
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise _Bad("duplicate archive entries")
        for i in infos:
            if not i.filename.endswith(".npy") or "/" in i.filename or "\\" in i.filename:
                raise _Bad(f"unexpected archive entry {i.filename!r} (only NAME.npy)")
            if i.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise _Bad(
                    f"entry {i.filename!r} uses ZIP compression method {i.compress_type} "
                    "(only stored and deflated entries are read)"
                )
        if "metadata.npy" not in names:
            raise _Bad("no 'metadata' entry")
        missing = sorted(set(shared) - {n[: -len(".npy")] for n in names if n != "metadata.npy"})
        if missing:
            raise SharedArrayMismatch(f"shared arrays {missing}: the file has no such entry")
        total = sum(i.file_size for i in infos if i.filename != "metadata.npy")
        if total > MAX_FILE_BYTES:
            raise _Bad(
                f"the arrays declare {total} bytes, above the limit MAX_FILE_BYTES = "
                f"{MAX_FILE_BYTES}"
            )
        meta_info = infos[names.index("metadata.npy")]
        raw = _read_npy(zf, meta_info, MAX_METADATA_BYTES)
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise _Bad("the metadata entry is not a UTF-8 byte array")
        text = raw.tobytes()
        try:
            meta = json.loads(text.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise _Bad(f"the metadata is not valid JSON ({type(exc).__name__}: {exc})") from exc
        _check_header(meta)
        budget = MAX_FILE_BYTES
        contents: dict[str, np.ndarray] = {}
        for info in infos:
            if info is meta_info:
                continue
            stem = info.filename[: -len(".npy")]
            arr = _read_npy(zf, info, budget, shared.get(stem))
            budget -= arr.nbytes
            contents[stem] = arr
    return meta, contents, text


def _check_header(meta: object) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise _Bad(f"format is {got!r}, expected {FORMAT_NAME!r}")
    version = meta.get("version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise _Bad(
            f"format version {version!r} is not supported by this structcore "
            f"(reads versions {list(READABLE_VERSIONS)})"
        )


def _verify(meta: dict[str, Any], contents: dict[str, np.ndarray], text: bytes) -> None:
    declared = meta.get("arrays")
    if not isinstance(declared, dict) or set(declared) != set(contents):
        got = sorted(contents)
        want = sorted(declared) if isinstance(declared, dict) else None
        raise _Bad(f"array entries {got} do not match the metadata's {want}")
    for name, spec in declared.items():
        a = contents[name]
        if (
            not isinstance(spec, dict)
            or a.dtype.str != spec.get("dtype")
            or list(a.shape) != spec.get("shape")
        ):
            raise _Bad(
                f"array {name!r} has dtype {a.dtype.str} shape {list(a.shape)}, metadata says "
                f"{spec}"
            )
    checksum = meta.get("checksum")
    if meta["version"] == 1:
        expected = array_checksum(contents)
    else:
        quoted = f'"{checksum}"'.encode() if isinstance(checksum, str) else b""
        if (
            not isinstance(checksum, str)
            or len(checksum) != 64
            or any(c not in "0123456789abcdef" for c in checksum)
            or text.count(quoted) != 1
        ):
            raise _Bad("checksum missing or malformed (64 lowercase hex digits, once)")
        zeroed = text.replace(quoted, f'"{_ZERO_DIGEST}"'.encode())
        expected = _payload_digest(zeroed, contents)
    if checksum != expected:
        raise _Bad("checksum mismatch (the file was modified or corrupted)")


def _check_shared(shared: object) -> dict[str, np.ndarray]:
    if shared is None:
        return {}
    if not isinstance(shared, dict):
        raise TypeError(f"shared must be a dict of entry name to ndarray; got {type(shared)}")
    for key, arr in shared.items():
        if not isinstance(key, str):
            raise TypeError(f"shared: keys must be entry names (str); got {key!r:.80}")
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"shared[{key!r}] must be a numpy array; got {type(arr).__name__}")
        if not arr.flags.c_contiguous:
            raise ValueError(f"shared[{key!r}] must be C-contiguous (a shared, unstrided copy)")
    return dict(shared)


def read_model_file(
    source: str | os.PathLike[str] | bytes,
    *,
    shared: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and verify a detector file without building the detector.

    Parameters
    ----------
    source : str, path-like or bytes
        The file, or its content.
    shared : dict of str to ndarray, optional
        Arrays the caller already holds with the same values as entries of the file (e.g.
        the memory bank in shared memory, read-only): each such entry is compared with its
        array block by block instead of being copied, and the array itself is returned in
        ``arrays`` (verified by the same checksum as a read entry).

    Returns
    -------
    meta : dict
        The JSON metadata (format and version checked).
    arrays : dict of str to ndarray
        Every array entry, checked against ``meta["arrays"]`` and the checksum.

    Raises
    ------
    FileNotFoundError
        ``source`` is a path that does not exist.
    ValueError
        Anything wrong with the content (see the module docstring).
    SharedArrayMismatch
        (a ``ValueError``) An array of ``shared`` is not the file's entry of that name.
    TypeError
        ``shared`` is not a dict of str to ndarray.
    """
    shared_arrays = _check_shared(shared)
    if isinstance(source, (bytes, bytearray, memoryview)):
        name: object = "<bytes>"
        opened: IO[bytes] = io.BytesIO(bytes(source))
    else:
        name = os.fspath(source)
        if not os.path.isfile(name):  # type: ignore[arg-type]
            raise FileNotFoundError(f"detector file not found: {name!r}")
        opened = open(name, "rb")  # type: ignore[arg-type]  # noqa: SIM115
    try:
        with opened:
            meta, contents, text = _read_archive(opened, shared_arrays)
            _verify(meta, contents, text)
    except _Bad as exc:
        raise _bad(name, str(exc)) from None
    except SharedArrayMismatch:
        raise
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        EOFError,
        OSError,
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        OverflowError,
        SyntaxError,
        NotImplementedError,  # unsupported ZIP compression
        RuntimeError,  # encrypted ZIP entries
        struct.error,
        zlib.error,  # corrupted deflate streams
    ) as exc:
        raise _bad(name, f"cannot read it as an .npz archive ({type(exc).__name__}: {exc})") from (
            exc
        )
    return meta, contents


# ---------------------------------------------------------------------------------------------
# metadata -> detector state


@dataclass(frozen=True)
class DetectorState:
    """A fitted detector as plain data: what a model file holds (module docstring).

    :meth:`structcore.Detector.save` builds one and :func:`write_state` writes it;
    :func:`read_state` reads and checks one and :meth:`structcore.Detector.load` builds the
    detector from it. Nothing here knows the detector class.

    Attributes
    ----------
    config : dict of str to object
        Every constructor parameter of the detector (JSON values).
    layers : tuple of str
        Backbone layers, shallowest first.
    weights_sha256 : str
        Hash of the backbone weights (:attr:`structcore.features.FeatureExtractor.weights_sha256`).
    components, stored_components : tuple of str
        Configured descriptor components; columns of ``train_phi``.
    calibration : str
        The configured calibration mode.
    calibration_modes : tuple of str
        The fitted modes (keys of ``train_phi``, ``train_max``, ``pixel_thresholds``).
    feature_grid : (int, int)
    feature_dim, n_train : int
    lam, decision_threshold, pixel_threshold : float
    pixel_thresholds : dict of str to float
    bank : ndarray of shape (n_bank, feature_dim), float32
    mu, sigma : ndarray of shape (len(components),), float64
    weights : ndarray of shape (len(components),), float64, or None
        The learned weights of ``calibration="synthetic"`` (None for the hybrid score).
    train_phi : dict of str to ndarray of shape (n_train, len(stored_components)), float64
    train_max : dict of str to ndarray of shape (n_train,), float64
    structcore_version : str
        Version that wrote the file ("" for a state not read from a file).
    """

    config: dict[str, Any]
    layers: tuple[str, ...]
    weights_sha256: str
    components: tuple[str, ...]
    stored_components: tuple[str, ...]
    calibration: str
    calibration_modes: tuple[str, ...]
    feature_grid: tuple[int, int]
    feature_dim: int
    n_train: int
    lam: float
    decision_threshold: float
    pixel_threshold: float
    pixel_thresholds: dict[str, float]
    bank: np.ndarray = field(repr=False)
    mu: np.ndarray = field(repr=False)
    sigma: np.ndarray = field(repr=False)
    train_phi: dict[str, np.ndarray] = field(repr=False)
    train_max: dict[str, np.ndarray] = field(repr=False)
    structcore_version: str = ""
    weights: np.ndarray | None = field(default=None, repr=False)


def _str_list(value: object, what: str, *, nonempty: bool = True) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Bad(f"{what} must be a list of strings; got {value!r:.200}")
    if nonempty and not value:
        raise _Bad(f"{what} must not be empty")
    return list(value)


def _pos_int(value: object, what: str) -> int:
    if type(value) is not int or value < 1:
        raise _Bad(f"{what} must be a positive integer; got {value!r:.200}")
    return value


def _finite(value: object, what: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):  # type: ignore[arg-type]
        raise _Bad(f"{what} must be a finite number; got {value!r:.200}")
    return float(value)  # type: ignore[arg-type]


def _all_finite(a: np.ndarray, rows: int = 8192) -> bool:
    """``np.isfinite(a).all()`` in blocks of rows (no temporary the size of a large bank)."""
    return all(bool(np.isfinite(a[i : i + rows]).all()) for i in range(0, len(a), rows))


def _parse(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> DetectorState:
    """Check every metadata field the detector uses and its agreement with the arrays."""
    config = meta.get("config")
    if not isinstance(config, dict):
        raise _Bad("config must be a JSON object")
    fitted = meta.get("fitted")
    if not isinstance(fitted, dict):
        raise _Bad("fitted must be a JSON object")
    sha = meta.get("weights_sha256")
    if not isinstance(sha, str):
        raise _Bad("weights_sha256 must be a string")
    layers = _str_list(meta.get("layers"), "layers")
    comps = tuple(_str_list(meta.get("components"), "components"))
    stored = tuple(_str_list(meta.get("stored_components"), "stored_components"))
    modes = tuple(_str_list(meta.get("calibration_modes"), "calibration_modes"))
    if not set(modes) <= set(MAP_MODES) or len(set(modes)) != len(modes):
        raise _Bad(f"calibration_modes {list(modes)} must be distinct of {MAP_MODES}")
    if not set(comps) <= set(stored):
        raise _Bad("components must be among stored_components")
    grid_v = meta.get("feature_grid")
    if not isinstance(grid_v, list) or len(grid_v) != 2:
        raise _Bad(f"feature_grid must be [h, w]; got {grid_v!r:.200}")
    grid = (_pos_int(grid_v[0], "feature_grid[0]"), _pos_int(grid_v[1], "feature_grid[1]"))
    fdim = _pos_int(meta.get("feature_dim"), "feature_dim")
    n_train = _pos_int(fitted.get("n_train"), "fitted.n_train")
    thresholds = fitted.get("pixel_thresholds")
    if not isinstance(thresholds, dict) or set(thresholds) != set(modes):
        raise _Bad("fitted.pixel_thresholds must hold one number per calibration mode")
    pixel_thresholds = {m: _finite(thresholds[m], f"fitted.pixel_thresholds.{m}") for m in modes}
    lam = _finite(fitted.get("lambda"), "fitted.lambda")
    if lam < 0:
        raise _Bad(f"fitted.lambda must be >= 0; got {lam!r}")
    decision = _finite(fitted.get("decision_threshold"), "fitted.decision_threshold")
    pixel = _finite(fitted.get("pixel_threshold"), "fitted.pixel_threshold")
    calibration = meta.get("calibration")
    if not isinstance(calibration, str):
        calibration = config.get("calibration")
    weights = _weights(arrays.get("weights"), meta["version"], calibration, modes, len(comps))

    bank = arrays.get("bank")
    mu, sigma = arrays.get("mu"), arrays.get("sigma")
    if bank is None or bank.dtype != np.float32 or bank.ndim != 2 or bank.shape[1] != fdim:
        raise _Bad(f"arrays inconsistent with the metadata (bank: feature_dim {fdim})")
    if bank.shape[0] < 1:
        raise _Bad("arrays inconsistent with the metadata (bank: empty)")
    if mu is None or sigma is None or mu.dtype != np.float64 or sigma.dtype != np.float64:
        raise _Bad("arrays inconsistent with the metadata (mu/sigma missing or not float64)")
    if mu.shape != (len(comps),) or sigma.shape != (len(comps),):
        raise _Bad("arrays inconsistent with the metadata (mu/sigma)")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all() and bool(np.all(sigma > 0))):
        raise _Bad("arrays inconsistent with the metadata (mu/sigma must be finite, sigma > 0)")
    if not _all_finite(bank):
        raise _Bad("the bank holds NaN or Inf values")
    for mode in modes:
        phi = arrays.get(f"train_phi.{mode}")
        mx = arrays.get(f"train_max.{mode}")
        if (
            phi is None
            or mx is None
            or phi.dtype != np.float64
            or mx.dtype != np.float64
            or phi.shape != (n_train, len(stored))
            or mx.shape != (n_train,)
        ):
            raise _Bad(f"arrays inconsistent with the metadata (train arrays of mode {mode!r})")
        if not (np.isfinite(phi).all() and np.isfinite(mx).all()):
            raise _Bad(f"the train arrays of mode {mode!r} hold NaN or Inf values")
    version = meta.get("structcore_version")
    return DetectorState(
        config=dict(config),
        layers=tuple(layers),
        weights_sha256=sha,
        components=comps,
        stored_components=stored,
        calibration=str(calibration),
        calibration_modes=modes,
        feature_grid=grid,
        feature_dim=fdim,
        n_train=n_train,
        lam=lam,
        decision_threshold=decision,
        pixel_threshold=pixel,
        pixel_thresholds=pixel_thresholds,
        bank=np.ascontiguousarray(bank),
        mu=mu,
        sigma=sigma,
        train_phi={m: arrays[f"train_phi.{m}"] for m in modes},
        train_max={m: arrays[f"train_max.{m}"] for m in modes},
        structcore_version=version if isinstance(version, str) else "",
        weights=weights,
    )


def _weights(
    arr: np.ndarray | None, version: int, calibration: object, modes: tuple[str, ...], f: int
) -> np.ndarray | None:
    """The ``weights`` entry, checked: present exactly for ``"synthetic"``, version 3 only,
    float64 of shape (F,), finite."""
    synthetic = calibration == "synthetic"
    if synthetic and map_mode("synthetic") not in modes:
        raise _Bad("calibration 'synthetic' needs the crossfit calibration arrays")
    if arr is None:
        if synthetic:
            raise _Bad("calibration 'synthetic' needs the 'weights' entry (learned weights)")
        return None
    if not synthetic:
        raise _Bad(f"a 'weights' entry with calibration {calibration!r} (only 'synthetic')")
    if version < FORMAT_VERSION:
        raise _Bad(f"a 'weights' entry in a version {version} file (version 3 introduced it)")
    if arr.dtype != np.float64 or arr.shape != (f,):
        raise _Bad(
            f"arrays inconsistent with the metadata (weights: dtype {arr.dtype.str} shape "
            f"{list(arr.shape)}, expected <f8 [{f}], one value per component)"
        )
    if not np.isfinite(arr).all():
        raise _Bad("the weights hold NaN or Inf values")
    return arr


def read_state(
    source: str | os.PathLike[str] | bytes, *, shared: dict[str, np.ndarray] | None = None
) -> DetectorState:
    """Read, verify and parse a model file into a :class:`DetectorState`.

    Parameters
    ----------
    source : str, path-like or bytes
        The file, or its content.
    shared : dict of str to ndarray, optional
        As in :func:`read_model_file` (e.g. ``{"bank": shared_bank}``).

    Returns
    -------
    state : DetectorState

    Raises
    ------
    FileNotFoundError
        ``source`` is a path that does not exist.
    ValueError
        Anything wrong with the file (see the module docstring): one message starting with
        the path and ``is not a valid structcore detector file``.
    """
    meta, arrays = read_model_file(source, shared=shared)
    try:
        return _parse(meta, arrays)
    except InvalidModelFile as exc:
        name = "<bytes>" if isinstance(source, (bytes, bytearray, memoryview)) else source
        raise invalid_file_error(name, str(exc)) from None
