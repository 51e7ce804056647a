"""Scoring one chunk: what a local run and every Ray actor execute.

:class:`ChunkScorer` loads the model once, then turns a chunk of paths into its part file
(:func:`structcore.distributed._sink.write_part`) and, optionally, one ``.npy`` map per
image. It never raises for an image: a file that cannot be read or scored gets a row with
``error``; only problems of the output folder itself (disk full, permissions) raise.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
import tempfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..io import SharedArrayMismatch
from ._inputs import is_uri
from ._sink import (
    ATTEMPTS_DIR,
    atomic_write,
    done_chunks,
    failed_in_parts,
    part_name,
    schema,
    write_part,
)

__all__ = [
    "ATTEMPTS_DIR",
    "ISOLATE_FROM_ATTEMPT",
    "MAX_DEATHS_PER_IMAGE",
    "ChunkScorer",
    "file_sha256",
    "private_bytes",
    "release_free_heap",
]


#: The attempt of a chunk from which its images are scored one at a time (a chunk whose
#: processes died twice: the first retry still scores in batches, bit-identical to
#: ``predict``; one-image batches can differ from them in the last float32 bits).
ISOLATE_FROM_ATTEMPT = 3
#: Deaths of a worker process while scoring an image alone before that image is skipped.
MAX_DEATHS_PER_IMAGE = 1


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def private_bytes() -> int:
    """This process's private memory (``Private_Clean + Private_Dirty`` of
    ``/proc/self/smaps_rollup``: the USS), in bytes; -1 where unavailable (not Linux)."""
    try:
        text = Path("/proc/self/smaps_rollup").read_text()
    except OSError:
        return -1
    kb = 0
    for line in text.splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            kb += int(line.split()[1])
    return kb * 1024


def release_free_heap() -> bool:
    """Return the C heap's free memory to the operating system (glibc ``malloc_trim(0)``).

    Loading a model reads its arrays through temporary buffers; once the bank is replaced
    by the object store's shared copy, glibc keeps the freed heap pages mapped (they sit
    below other allocations), so every worker would hold them privately for its whole life.
    Returns False where there is no glibc (other C libraries, other systems): nothing done.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): no malloc_trim
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
    return True


def _save_npy(fh: IO[bytes], arr: np.ndarray) -> None:
    np.save(fh, np.ascontiguousarray(arr, dtype=np.float32), allow_pickle=False)


class _Scores:
    """Per-path results of one chunk: scores, decisions, maps (None when failed), errors."""

    def __init__(self, n: int) -> None:
        self.score = np.full(n, np.nan)
        self.score_max = np.full(n, np.nan)
        self.anomalous = np.zeros(n, dtype=bool)
        self.maps: list[np.ndarray | None] = [None] * n
        self.errors: dict[int, str] = {}
        self.ok = np.zeros(n, dtype=bool)

    def take(self, indices: list[int], pred: Any) -> None:
        """Copy ``pred`` (a :class:`structcore.Prediction` of ``indices``) in."""
        for j, i in enumerate(indices):
            if j in pred.errors or not bool(pred.valid[j]):
                self.errors[i] = pred.errors.get(j, "ValueError: not scored")
                continue
            self.score[i] = float(pred.score[j])
            self.score_max[i] = float(pred.score_max[j])
            self.anomalous[i] = bool(pred.is_anomalous[j])
            self.maps[i] = pred.maps[j]
            self.ok[i] = True


class ChunkScorer:
    """A loaded model that scores chunks into part files.

    Parameters
    ----------
    model_path : str
        The ``Detector.save`` file (readable here).
    output : str
        The output folder (shared by every worker).
    chunk_size : int
        Paths per chunk (the part-file numbering: chunk ``i`` holds inputs
        ``[i * chunk_size, (i + 1) * chunk_size)``).
    batch_size : int
        Images per backbone batch.
    threads : int
        Torch intra-op threads and C++ kernel threads of this worker.
    maps : str or None
        Folder for the ``.npy`` anomaly maps, or None.
    cwd : str
        The driver's working directory: relative input paths are read from there.
    shared_bank : ndarray or None
        A read-only view of the model's bank in shared memory (the Ray object store): the
        detector's bank when it holds the file's values (``Detector.load(shared_bank=)``,
        compared while reading: no private copy is made), else the file is loaded as usual.
    fault : dict or None
        Test-only fault injection: ``{"after_images", "phase", "marker"}`` (see
        :meth:`_maybe_die`), or ``{"phase": "poison", "path_contains": s}`` (every call
        that scores a path containing ``s`` kills the process).
    trace : str or None
        Test/benchmark-only: a folder where each process appends ``chunk n_paths`` lines
        when it starts scoring a chunk (to count re-scored images).
    """

    def __init__(
        self,
        model_path: str,
        output: str,
        *,
        chunk_size: int,
        batch_size: int,
        threads: int,
        maps: str | None,
        cwd: str,
        shared_bank: np.ndarray | None = None,
        fault: dict[str, Any] | None = None,
        trace: str | None = None,
    ) -> None:
        import torch

        from ..detector import Detector

        self.output = output
        self.chunk_size = chunk_size
        self.batch_size = batch_size
        self.maps = maps
        self.cwd = cwd
        self.fault = fault
        self.trace = trace
        torch.set_num_threads(threads)
        self.private_before_load = private_bytes()
        det = None
        if shared_bank is not None:
            try:  # the file's bank is checked against the shared one, never copied
                det = Detector.load(model_path, shared_bank=shared_bank)
            except SharedArrayMismatch:  # another file than the driver's: a private copy
                det = None
        self.bank_shared = det is not None
        if det is None:
            det = Detector.load(model_path)
        det.threads = threads
        det.progress = False
        release_free_heap()  # the loading buffers, now unused
        self.detector = det
        self.private_after_load = private_bytes()
        self.pid = os.getpid()

    # ------------------------------------------------------------------------ fault hooks

    def _maybe_die(self, phase: str, armed: bool) -> None:
        """Test-only: SIGKILL this process at ``phase`` of the chunk for which the hook is
        armed (the first chunk started once ``after_images`` rows are on disk), once per run
        (the first process to create the ``marker`` file dies; restarted ones do not)."""
        if not armed or self.fault is None or self.fault.get("phase") != phase:
            return
        try:
            fd = os.open(self.fault["marker"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, f"{os.getpid()} {phase}\n".encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)

    def _armed(self) -> bool:
        if self.fault is None or "marker" not in self.fault or os.path.exists(self.fault["marker"]):
            return False
        done = len(done_chunks(self.output)) * self.chunk_size
        return done >= int(self.fault.get("after_images", 0))

    # ------------------------------------------------------------------------ scoring

    def _local_path(self, path: str, tmp: str) -> str:
        if is_uri(path):
            import pyarrow.fs as pafs

            fs, inner = pafs.FileSystem.from_uri(path)
            local = os.path.join(tmp, f"{len(os.listdir(tmp)):06d}{os.path.splitext(inner)[1]}")
            with fs.open_input_stream(inner) as src, open(local, "wb") as dst:
                dst.write(src.read())
            return local
        return path if os.path.isabs(path) else os.path.join(self.cwd, path)

    def _predict(self, paths: list[str]) -> _Scores:
        """``predict(paths, errors="skip")`` into per-path arrays; a call that fails as a
        whole is retried one image at a time, so that only the culprit gets the error."""
        res = _Scores(len(paths))
        with tempfile.TemporaryDirectory(prefix="structcore-") as tmp:
            local: dict[int, str] = {}
            for i, p in enumerate(paths):
                try:
                    local[i] = self._local_path(p, tmp)
                except Exception as exc:  # an unreachable URI: this image's error
                    res.errors[i] = f"{type(exc).__name__}: {exc}"
            todo = sorted(local)
            if (  # test-only: an image that kills its process every time it is scored
                self.fault is not None
                and self.fault.get("phase") == "poison"
                and any(self.fault["path_contains"] in local[i] for i in todo)
            ):
                os.kill(os.getpid(), signal.SIGKILL)
            groups = [todo] if todo else []
            while groups:
                group = groups.pop()
                try:
                    pred = self.detector.predict(
                        [local[i] for i in group], self.batch_size, errors="skip"
                    )
                except Exception as exc:
                    if len(group) == 1:
                        res.errors[group[0]] = f"{type(exc).__name__}: {exc}"
                    else:
                        groups.extend([i] for i in group)
                    continue
                res.take(group, pred)
        return res

    # ------------------------------------------------------------------------ attempts

    def _attempt_file(self, chunk: int) -> Path:
        return Path(self.output) / ATTEMPTS_DIR / part_name(chunk).replace(".parquet", ".json")

    def _begin_attempt(self, chunk: int) -> dict[str, Any]:
        """Record that this process starts chunk ``chunk``; returns the attempt record:
        ``attempt`` (1 for the first), ``suspects`` (index -> times a process died while
        scoring that image alone), ``current`` (the image being scored alone, or None).

        The record is deleted once the part file is written, so it exists at the start of
        an attempt only when an earlier attempt's process died (or a driver was killed).
        """
        path = self._attempt_file(chunk)
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old is None:
            record: dict[str, Any] = {"attempt": 1, "suspects": {}, "current": None}
        else:
            suspects = {str(k): int(v) for k, v in dict(old.get("suspects", {})).items()}
            cur = old.get("current")
            if cur is not None:
                suspects[str(cur)] = suspects.get(str(cur), 0) + 1
            record = {
                "attempt": int(old.get("attempt", 1)) + 1,
                "suspects": suspects,
                "current": None,
            }
        self._save_attempt(chunk, record)
        return record

    def _save_attempt(self, chunk: int, record: dict[str, Any]) -> None:
        path = self._attempt_file(chunk)
        path.parent.mkdir(exist_ok=True)
        text = json.dumps(record).encode("utf-8")
        atomic_write(path, lambda fh: fh.write(text))

    def _predict_isolating(self, chunk: int, paths: list[str], record: dict[str, Any]) -> _Scores:
        """A chunk whose processes died :data:`ISOLATE_FROM_ATTEMPT` - 1 times: one image at a
        time, each recorded before it is scored, so that an image that kills the process is
        known; one that did so :data:`MAX_DEATHS_PER_IMAGE` times gets an error and is
        skipped."""
        res = _Scores(len(paths))
        for i in range(len(paths)):
            deaths = record["suspects"].get(str(i), 0)
            if deaths >= MAX_DEATHS_PER_IMAGE:
                res.errors[i] = (
                    f"RuntimeError: the worker process died while scoring this image alone "
                    f"({deaths}x, after the chunk had killed it {ISOLATE_FROM_ATTEMPT - 1}x; a "
                    "crash in a decoder or kernel?); skipped"
                )
                continue
            record["current"] = i
            self._save_attempt(chunk, record)
            one = self._predict([paths[i]])
            if one.ok[0]:
                res.score[i], res.score_max[i] = one.score[0], one.score_max[0]
                res.anomalous[i], res.maps[i], res.ok[i] = one.anomalous[0], one.maps[0], True
            else:
                res.errors[i] = one.errors[0]
        return res

    def score_chunk(self, chunk: int, paths: list[str]) -> dict[str, Any]:
        """Score ``paths`` (chunk ``chunk``) and write its part file (and maps).

        Returns
        -------
        dict
            ``chunk``, ``rows``, ``failed``, ``written`` (False when the part file already
            existed: a retried task), ``pid``, ``private_before_load``,
            ``private_after_load``, ``private_now`` (bytes), ``bank_shared``.
        """
        part = Path(self.output) / part_name(chunk)
        stats: dict[str, Any] = {
            "chunk": chunk,
            "rows": len(paths),
            "pid": self.pid,
            "private_before_load": self.private_before_load,
            "private_after_load": self.private_after_load,
            "bank_shared": self.bank_shared,
        }
        if part.exists():  # a previous attempt wrote it before its worker died
            stats.update(failed=failed_in_parts(self.output, [chunk]), written=False)
            stats["private_now"] = private_bytes()
            return stats
        armed = self._armed()
        if self.trace is not None:
            with open(os.path.join(self.trace, f"{self.pid}.log"), "a") as fh:
                fh.write(f"{chunk} {len(paths)}\n")
        record = self._begin_attempt(chunk)
        self._maybe_die("before_score", armed)
        if record["attempt"] < ISOLATE_FROM_ATTEMPT:
            res = self._predict(paths)
        else:
            res = self._predict_isolating(chunk, paths, record)
        self._maybe_die("after_score", armed)
        map_paths: list[str | None] | None = None
        if self.maps is not None:
            map_paths = self._write_maps(chunk, paths, res)
        table = self._table(paths, res, map_paths)
        if self.fault is not None and armed and self.fault.get("phase") == "mid_write":
            self._die_mid_write(part, table)
        write_part(self.output, chunk, table)
        self._attempt_file(chunk).unlink(missing_ok=True)
        self._maybe_die("after_write", armed)
        stats.update(failed=len(res.errors), written=True, private_now=private_bytes())
        return stats

    def _die_mid_write(self, part: Path, table: Any) -> None:
        """Test-only: leave a half-written temporary file, then die (the mid_write phase)."""
        import io

        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(table, buf)
        data = buf.getvalue()
        tmp = part.parent / f".{part.name}.tmp-killed"
        tmp.write_bytes(data[: len(data) // 2])
        self._maybe_die("mid_write", True)

    def _write_maps(self, chunk: int, paths: list[str], res: _Scores) -> list[str | None]:
        assert self.maps is not None
        folder = Path(self.maps) / f"part-{chunk:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        out: list[str | None] = []
        for j, (p, m) in enumerate(zip(paths, res.maps, strict=True)):
            if m is None:
                out.append(None)
                continue
            stem = os.path.splitext(os.path.basename(p.rstrip("/")))[0][:80] or "image"
            target = folder / f"{j:06d}_{stem}.npy"
            atomic_write(target, functools.partial(_save_npy, arr=m))
            out.append(str(target))
        return out

    @staticmethod
    def _table(paths: list[str], res: _Scores, map_paths: list[str | None] | None) -> Any:
        import pyarrow as pa

        bad = ~res.ok
        cols = [
            pa.array(paths, type=pa.string()),
            pa.array(res.score, type=pa.float64(), mask=bad),
            pa.array(res.score_max, type=pa.float64(), mask=bad),
            pa.array(res.anomalous, type=pa.bool_(), mask=bad),
            pa.array([res.errors.get(i) for i in range(len(paths))], type=pa.string()),
        ]
        if map_paths is not None:
            cols.append(pa.array(map_paths, type=pa.string()))
        return pa.Table.from_arrays(cols, schema=schema(map_paths is not None))
