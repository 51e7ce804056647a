"""Input expansion for :func:`structcore.distributed.score`: folders, globs, lists, URIs.

Every function here runs in the driver. The result is the sorted, de-duplicated list of path
strings that the engines cut into chunks (:func:`chunk_paths`); the same inputs give the same
list, so the same chunks, on every run (what ``resume`` relies on).
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["chunk_paths", "expand_inputs", "inputs_digest", "is_uri"]


def is_uri(path: str) -> bool:
    """True for ``scheme://...`` strings (``s3://``, ``gs://``, ``file://``), read with
    :mod:`pyarrow.fs`; Windows drive letters (``C:\\``) are not URIs."""
    head, sep, _ = path.partition("://")
    return bool(sep) and len(head) > 1 and head.replace("+", "").isalnum()


def _has_image_suffix(name: str) -> bool:
    from ..datasets import IMAGE_EXTENSIONS

    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _list_uri(uri: str) -> list[str]:
    """Image files under a URI folder (recursive), or the URI itself when it is a file."""
    try:
        import pyarrow.fs as pafs
    except ImportError as exc:  # pragma: no cover - pyarrow comes with the ray extra
        raise ImportError(
            f"inputs: reading {uri!r} needs pyarrow (pip install 'structcore[ray]')"
        ) from exc
    fs, root = pafs.FileSystem.from_uri(uri)
    info = fs.get_file_info(root)
    scheme = uri.split("://", 1)[0]
    if info.type == pafs.FileType.File:
        return [uri]
    if info.type != pafs.FileType.Directory:
        raise FileNotFoundError(f"inputs: no such file or folder: {uri}")
    found = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    out = []
    for f in found:
        if f.type == pafs.FileType.File and _has_image_suffix(f.base_name):
            path = f.path if f.path.startswith("/") else "/" + f.path
            out.append(f"{scheme}://{path[1:]}" if scheme != "file" else f"file://{path}")
    return out


def _expand_one(text: str) -> list[str]:
    if is_uri(text):
        if glob.has_magic(text):
            raise ValueError(f"inputs: glob patterns are not supported in URIs; got {text!r}")
        return _list_uri(text)
    p = Path(text)
    if p.is_dir():
        return [str(q) for q in p.rglob("*") if q.is_file() and _has_image_suffix(q.name)]
    if p.is_file():
        return [text]
    if glob.has_magic(text):
        return [q for q in glob.glob(text, recursive=True) if os.path.isfile(q)]
    raise FileNotFoundError(f"inputs: no such file or folder: {text}")


def expand_inputs(inputs: object) -> list[str]:
    """The sorted, de-duplicated image paths that ``inputs`` names.

    Parameters
    ----------
    inputs : str, path-like, or sequence of str / path-like
        A folder (its image files, recursively, by extension: see
        :data:`structcore.datasets.IMAGE_EXTENSIONS`), a glob pattern (``**`` recurses), a
        single file, a ``scheme://`` URI of a file or folder (:mod:`pyarrow.fs`: ``s3://``,
        ``gs://``, ``file://``), or a list of paths. List entries are taken as given: a
        missing or unreadable file becomes an output row with an ``error``, it is not
        refused here.

    Returns
    -------
    list of str
        Sorted, without duplicates (string equality).

    Raises
    ------
    TypeError
        ``inputs`` is not a path, a string or a sequence of them.
    FileNotFoundError
        A single ``inputs`` path that is neither a file nor a folder nor a matching pattern.
    ValueError
        No image at all.
    """
    if isinstance(inputs, (str, os.PathLike)):
        found = _expand_one(os.fspath(inputs))  # type: ignore[arg-type]
        what = f"inputs {os.fspath(inputs)!r}"  # type: ignore[arg-type]
    elif isinstance(inputs, Sequence) and not isinstance(inputs, (bytes, bytearray)):
        found = []
        for i, item in enumerate(inputs):
            if not isinstance(item, (str, os.PathLike)):
                raise TypeError(
                    f"inputs[{i}] must be a str or path-like; got {type(item).__name__}"
                )
            found.append(os.fspath(item))  # type: ignore[arg-type]
        what = "inputs"
    else:
        raise TypeError(
            "inputs must be a folder, a glob pattern, a path or a list of paths; got "
            f"{type(inputs).__name__}"
        )
    paths = sorted(set(found))
    if not paths:
        raise ValueError(f"{what}: no image files found")
    return paths


def inputs_digest(paths: Sequence[str]) -> str:
    """SHA-256 of the path list (``"\\n"``-joined, UTF-8): the manifest's input identity."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.encode("utf-8", "surrogateescape"))
        h.update(b"\n")
    return h.hexdigest()


def chunk_paths(paths: Sequence[str], chunk_size: int) -> list[list[str]]:
    """Consecutive chunks of ``chunk_size`` paths (the last may be shorter); chunk ``i``
    becomes the part file ``part-<i:06d>.parquet``."""
    return [list(paths[i : i + chunk_size]) for i in range(0, len(paths), chunk_size)]
