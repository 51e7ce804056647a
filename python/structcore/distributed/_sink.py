"""The output folder of :func:`structcore.distributed.score`: atomic part files, manifest, resume.

Layout of ``output``::

    _manifest.json          what this folder holds: model digest, input digest, chunking
    part-000000.parquet     the rows of chunk 0 (paths[0:chunk_size]), written atomically
    part-000001.parquet     ...
    _attempts/              a small JSON record per chunk in progress (deleted when its
                            part file is written): what makes retries of a chunk finite
    _SUCCESS                the JSON summary, written last: the job finished

A part file is the commit record of its chunk: it is written to a hidden temporary file in
the same folder, flushed to disk (``fsync``) and renamed over its final name
(:func:`os.replace`, atomic on POSIX file systems). So a part file is either absent or
complete, and writing the same chunk twice (a retried task after a worker died) replaces it
with the same rows: every input is in exactly one part file, once. Readers that list the
folder (:func:`pyarrow.parquet.read_table`, Spark, DuckDB) skip names starting with ``_`` or
``.``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST",
    "SUCCESS",
    "atomic_write",
    "done_chunks",
    "failed_in_parts",
    "part_name",
    "prepare_output",
    "read_scores",
    "schema",
    "write_success",
]

FORMAT_NAME = "structcore.scores"
FORMAT_VERSION = 1
MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"
#: Per-chunk attempt records of chunks in progress (see ``_worker.ChunkScorer``).
ATTEMPTS_DIR = "_attempts"
_PART_RE = re.compile(r"^part-(\d{6,})\.parquet$")
_TMP_MARK = ".tmp-"
#: Manifest keys that must match for ``resume``.
_IDENTITY = ("format", "version", "model_sha256", "n_inputs", "inputs_sha256", "chunk_size", "maps")


def part_name(chunk: int) -> str:
    """File name of chunk ``chunk``'s rows: ``part-<chunk:06d>.parquet``."""
    return f"part-{chunk:06d}.parquet"


def schema(with_maps: bool) -> Any:
    """The Arrow schema of the part files (``map_path`` only when maps are written)."""
    import pyarrow as pa

    fields = [
        pa.field("path", pa.string(), nullable=False),
        pa.field("score", pa.float64()),
        pa.field("score_max", pa.float64()),
        pa.field("is_anomalous", pa.bool_()),
        pa.field("error", pa.string()),
    ]
    if with_maps:
        fields.append(pa.field("map_path", pa.string()))
    return pa.schema(fields)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` all at once: ``write(fh)`` into a hidden temporary file beside it,
    fsync, then :func:`os.replace`. On any error the temporary file is removed and
    ``path`` is untouched."""
    path = os.fspath(path)
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}{_TMP_MARK}{uuid.uuid4().hex}")
    try:
        with open(tmp, "xb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def done_chunks(output: str | os.PathLike[str]) -> set[int]:
    """Chunk ids whose part file exists in ``output`` (empty when the folder is absent)."""
    try:
        names = os.listdir(output)
    except FileNotFoundError:
        return set()
    out = set()
    for name in names:
        m = _PART_RE.match(name)
        if m:
            out.add(int(m.group(1)))
    return out


def _remove_temporaries(output: Path) -> int:
    """Delete temporary files a killed writer left behind; returns how many."""
    n = 0
    for entry in output.iterdir():
        if entry.name.startswith(".") and _TMP_MARK in entry.name and entry.is_file():
            entry.unlink(missing_ok=True)
            n += 1
    return n


def prepare_output(
    output: str | os.PathLike[str],
    manifest: dict[str, Any],
    *,
    resume: bool,
    overwrite: bool,
) -> set[int]:
    """Make ``output`` ready for a run of ``manifest``; returns the chunks already done.

    Parameters
    ----------
    output : str or path-like
        The output folder (created when absent).
    manifest : dict
        This run's identity (``format``, ``version``, ``model_sha256``, ``n_inputs``,
        ``inputs_sha256``, ``chunk_size``, ``maps``) plus informative keys.
    resume : bool
        Continue the run recorded in ``output/_manifest.json``: its chunks with a part file
        are done. The identity must match.
    overwrite : bool
        Delete a previous run's files (part files, manifest, ``_SUCCESS``) first.

    Returns
    -------
    set of int
        Chunk ids already written (empty unless ``resume``).

    Raises
    ------
    ValueError
        ``output`` is a file; it holds other files than a previous run's; it holds a
        previous run and neither ``resume`` nor ``overwrite`` was given; ``resume`` with a
        manifest of another model, other inputs or other chunking.
    """
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {str(out)!r} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    _remove_temporaries(out)
    names = sorted(os.listdir(out))
    ours = [n for n in names if n in (MANIFEST, SUCCESS, ATTEMPTS_DIR) or _PART_RE.match(n)]
    foreign = [n for n in names if n not in ours]
    if foreign:
        raise ValueError(
            f"output {str(out)!r} holds files that are not a structcore score run "
            f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); "
            "give an empty or new folder"
        )
    done: set[int] = set()
    if ours and overwrite and not resume:
        for n in ours:
            if n == ATTEMPTS_DIR:
                shutil.rmtree(out / n)
            else:
                (out / n).unlink()
        ours = []
    if ours:
        if not resume:
            raise ValueError(
                f"output {str(out)!r} already holds a score run; pass resume=True (CLI "
                "--resume) to score only its missing images, or overwrite=True (--overwrite) "
                "to start again"
            )
        try:
            old = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"output {str(out)!r}: cannot resume, its {MANIFEST} is missing or unreadable "
                f"({exc}); use a new folder or overwrite=True"
            ) from None
        diff = [k for k in _IDENTITY if old.get(k) != manifest.get(k)]
        if diff:
            what = "; ".join(f"{k}: saved {old.get(k)!r}, now {manifest.get(k)!r}" for k in diff)
            raise ValueError(
                f"output {str(out)!r}: cannot resume a run of other inputs, model or "
                f"settings ({what}); give the same inputs, model, batch_size/chunk_size and "
                "maps, or use a new folder"
            )
        done = {c for c in done_chunks(out) if c * manifest["chunk_size"] < manifest["n_inputs"]}
        (out / SUCCESS).unlink(missing_ok=True)
    else:
        text = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")
        atomic_write(out / MANIFEST, lambda fh: fh.write(text))
    return done


def write_part(output: str | os.PathLike[str], chunk: int, table: Any) -> Path:
    """Write ``table`` (a :class:`pyarrow.Table`) as chunk ``chunk``'s part file, atomically."""
    import pyarrow.parquet as pq

    path = Path(output) / part_name(chunk)
    atomic_write(path, lambda fh: pq.write_table(table, fh))
    return path


def failed_in_parts(output: str | os.PathLike[str], chunks: Iterable[int]) -> int:
    """Rows with an ``error`` in the part files of ``chunks`` (reads that column only)."""
    import pyarrow.parquet as pq

    n = 0
    for c in chunks:
        col = pq.read_table(Path(output) / part_name(c), columns=["error"]).column("error")
        n += len(col) - col.null_count
    return n


def write_success(output: str | os.PathLike[str], summary: dict[str, Any]) -> None:
    """Write the ``_SUCCESS`` marker (the JSON ``summary``), atomically, last."""
    text = (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode("utf-8")
    atomic_write(Path(output) / SUCCESS, lambda fh: fh.write(text))


def read_scores(output: str | os.PathLike[str]) -> Any:
    """Every row of a score run's ``output`` folder, sorted by ``path``.

    Parameters
    ----------
    output : str or path-like
        A folder written by :func:`structcore.distributed.score` (finished or not).

    Returns
    -------
    pyarrow.Table
        Columns ``path``, ``score``, ``score_max``, ``is_anomalous``, ``error`` (and
        ``map_path`` when maps were written), one row per scored input.

    Raises
    ------
    FileNotFoundError
        ``output`` does not exist.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(output)
    if not out.is_dir():
        raise FileNotFoundError(f"output: no such folder: {out}")
    parts = [out / part_name(c) for c in sorted(done_chunks(out))]
    if not parts:
        return schema(False).empty_table()
    table = pa.concat_tables([pq.read_table(p) for p in parts])
    return table.sort_by("path")
