"""Past one machine: batch scoring and fleet fitting, locally or on a Ray cluster.

* :func:`score` scores a whole archive with one saved model into a folder of Parquet part
  files, in this process (``engine="local"``) or on a Ray Data actor pool
  (``engine="ray"``), exactly once per input even when workers die, and resumable after the
  driver itself was killed.
* :func:`fit_many` fits one model per product type (one Ray task each with
  ``engine="ray"``).
* :func:`read_scores` reads a score folder back as one table.

Ray is optional (``pip install "structcore[ray]"``) and imported only when
``engine="ray"``; :mod:`pyarrow` (which the ``ray`` extra brings) writes the part files.
Importing this module imports neither. See ``docs/SCALE.md`` for clusters, shared storage
and what is guaranteed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._validation import check_choice, check_int
from ._inputs import chunk_paths, expand_inputs, inputs_digest
from ._sink import FORMAT_NAME, FORMAT_VERSION, read_scores

__all__ = ["FitSummary", "ScoreSummary", "fit_many", "read_scores", "score"]

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class ScoreSummary:
    """What :func:`score` did (also written to ``output/_SUCCESS`` as JSON).

    Attributes
    ----------
    output : str
        The output folder.
    rows : int
        Rows in the output: one per input path.
    scored : int
        Images scored by this call (``rows - skipped``).
    skipped : int
        Rows already in ``output`` from an earlier, interrupted run (``resume=True``).
    failed : int
        Rows of the whole output with an ``error`` (unreadable, truncated, too large...).
    wall_s : float
        Seconds this call took, start-up (Ray, model loading) included.
    images_per_s : float
        ``scored / wall_s``.
    engine : str
        ``"local"`` or ``"ray"``.
    workers : int
        Processes that scored (1 for ``local``; the actor pool size for ``ray``).
    threads_per_worker : int
        Torch and C++ kernel threads of each worker.
    chunk_size : int
        Paths per part file.
    rewritten_chunks : int
        Chunks whose part file already existed when a (retried) task reached them: the
        trace of workers that died after writing.
    worker_memory : list of dict
        Per worker process: ``pid``, ``private_before_load``, ``private_after_load``,
        ``private_now`` (bytes of private memory, ``/proc/<pid>/smaps_rollup``; -1 off
        Linux) and ``bank_shared`` (the memory bank is the object store's copy).
    """

    output: str
    rows: int
    scored: int
    skipped: int
    failed: int
    wall_s: float
    images_per_s: float
    engine: str
    workers: int
    threads_per_worker: int
    chunk_size: int
    rewritten_chunks: int = 0
    worker_memory: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The summary as a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class FitSummary:
    """What :func:`fit_many` did (also written to ``out_dir/fit_summary.json``).

    Attributes
    ----------
    out_dir : str
        The folder of the model files.
    entries : list of dict
        One per model, in name order: ``name``, ``model`` (the file, or None when its fit
        failed), ``n_train`` (training images), ``fit_s`` (seconds, in its worker),
        ``error`` (None, or ``"Type: message"``).
    fitted : int
        Models written.
    failed : int
        Entries with an error.
    wall_s : float
        Seconds this call took.
    engine : str
        ``"local"`` or ``"ray"``.
    """

    out_dir: str
    entries: list[dict[str, Any]]
    fitted: int
    failed: int
    wall_s: float
    engine: str

    def to_dict(self) -> dict[str, Any]:
        """The summary as a JSON-ready dict."""
        return asdict(self)


def _require_pyarrow() -> None:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "structcore.distributed writes Parquet with pyarrow, which is not installed: "
            "pip install 'structcore[ray]' (or pip install pyarrow)"
        ) from exc


def _require_ray() -> None:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ImportError(
            "engine='ray' needs Ray Data, which is not installed: pip install "
            "'structcore[ray]' (or use engine='local')"
        ) from exc
    del ray


def _check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {value!r}")
    return value


def _opt_int(value: object, name: str) -> int | None:
    return None if value is None else check_int(value, name, low=1)


def _local_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def score(
    inputs: object,
    model: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    batch_size: int = 16,
    threads_per_worker: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    maps: str | os.PathLike[str] | None = None,
    chunk_size: int | None = None,
    progress: bool = True,
    _fault: dict[str, Any] | None = None,
    _trace: str | None = None,
) -> ScoreSummary:
    """Score every image of ``inputs`` with a saved model into Parquet part files.

    Parameters
    ----------
    inputs : str, path-like or sequence of them
        A folder (its image files, recursively), a glob pattern, a file, a ``s3://`` /
        ``gs://`` / ``file://`` URI of a file or folder (read with :mod:`pyarrow.fs`), or a
        list of paths (see :func:`structcore.distributed._inputs.expand_inputs`). Sorted and
        de-duplicated; relative paths are read from the current directory.
    model : str or path-like
        A :meth:`structcore.Detector.save` file. Ray actors read it from this path when it
        holds the same bytes on their node, else from a copy in the object store.
    output : str or path-like
        Folder for ``part-<i:06d>.parquet`` files (chunk ``i`` = inputs
        ``[i * chunk_size, (i + 1) * chunk_size)``, sorted), ``_manifest.json`` and, at the
        end, ``_SUCCESS`` (this summary). With ``engine="ray"`` every node must see it
        (shared storage). Columns: ``path`` (string), ``score``, ``score_max`` (float64;
        null for failed rows), ``is_anomalous`` (bool; null for failed rows), ``error``
        (string, null when the image scored) and, with ``maps``, ``map_path``.
    engine : {"local", "ray"}
        ``"local"``: this process, no Ray needed. ``"ray"``: a Ray Data actor pool.
    address : str or None
        Ray cluster address (``"auto"``, ``"ray://head:10001"``); None starts a local Ray
        (or uses ``RAY_ADDRESS``, or the Ray this process already initialised).
    workers : int or None
        Ray actors (default: from the cluster's CPUs, see
        :func:`structcore.distributed._ray.plan_workers`). Ignored by ``local`` (1).
    batch_size : int
        Images per backbone batch (``Detector.predict(..., batch_size=)``).
    threads_per_worker : int or None
        Torch and C++ kernel threads per worker (``ray`` default 1; ``local`` default: the
        CPUs this process may use). ``workers * threads_per_worker`` may not exceed the
        cluster's CPUs.
    resume : bool
        Continue an interrupted run in ``output``: only chunks without a part file are
        scored. The inputs, model, ``chunk_size`` and ``maps`` must be those of that run
        (checked against ``_manifest.json``; a mismatch raises).
    overwrite : bool
        Delete a previous run's files in ``output`` first (without it, and without
        ``resume``, a folder holding a run is refused).
    maps : str, path-like or None
        Folder for the anomaly maps: ``<maps>/part-<i:06d>/<j:06d>_<stem>.npy``, float32
        ``(crop, crop)``, path in the ``map_path`` column. None: no maps.
    chunk_size : int or None
        Paths per part file and per task (default ``batch_size``). A killed worker costs
        at most its in-flight chunk.
    progress : bool
        A progress bar over images on stderr.

    Returns
    -------
    ScoreSummary

    Raises
    ------
    TypeError, ValueError
        A bad argument (named in the message); an ``output`` that holds other files or a
        run that does not match (see ``resume``).
    FileNotFoundError
        ``model`` or a single ``inputs`` path does not exist.
    ImportError
        pyarrow is missing; or ``engine="ray"`` without Ray installed.
    RuntimeError
        Chunks are missing from ``output`` at the end (a worker died more often than the
        retries allow, e.g. an image that crashes the process); ``resume=True`` continues.

    Notes
    -----
    Scores equal ``Detector.load(model).predict(paths).score`` image by image (same
    kernels; torch thread counts can change the last bits of the backbone's float32 sums,
    below 1e-6 here). An image that cannot be read or scored (missing, truncated, not an
    image, above :data:`structcore.images.MAX_IMAGE_PIXELS`) gets a row with ``error`` and
    the job goes on. Examples: ``docs/SCALE.md``.
    """
    t0 = time.perf_counter()
    check_choice(engine, "engine", ENGINES)
    batch_size = check_int(batch_size, "batch_size", low=1)
    n_workers = _opt_int(workers, "workers")
    n_threads = _opt_int(threads_per_worker, "threads_per_worker")
    chunk = batch_size if chunk_size is None else check_int(chunk_size, "chunk_size", low=1)
    resume = _check_bool(resume, "resume")
    overwrite = _check_bool(overwrite, "overwrite")
    progress = _check_bool(progress, "progress")
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other; give one")
    if address is not None and not isinstance(address, str):
        raise TypeError(f"address must be a str or None; got {type(address).__name__}")
    if address is not None and engine != "ray":
        raise ValueError("address is only used with engine='ray'")
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a path; got {type(model).__name__}")
    if not isinstance(output, (str, os.PathLike)):
        raise TypeError(f"output must be a folder path; got {type(output).__name__}")
    model_path = os.path.abspath(os.fspath(model))
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"model: no such file: {os.fspath(model)}")
    maps_dir = None
    if maps is not None:
        if not isinstance(maps, (str, os.PathLike)):
            raise TypeError(f"maps must be a folder path or None; got {type(maps).__name__}")
        maps_dir = os.path.abspath(os.fspath(maps))
    _require_pyarrow()
    if engine == "ray":
        _require_ray()

    from ._sink import done_chunks, failed_in_parts, prepare_output, write_success
    from ._worker import file_sha256

    out_dir = os.path.abspath(os.fspath(output))
    paths = expand_inputs(inputs)
    chunks = chunk_paths(paths, chunk)
    model_sha = file_sha256(model_path)
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "model": model_path,
        "model_sha256": model_sha,
        "n_inputs": len(paths),
        "inputs_sha256": inputs_digest(paths),
        "chunk_size": chunk,
        "n_chunks": len(chunks),
        "maps": maps_dir,
    }
    done = prepare_output(out_dir, manifest, resume=resume, overwrite=overwrite)
    pending = [c for c in range(len(chunks)) if c not in done]
    stats: dict[int, dict[str, Any]] = {}
    memory: dict[int, dict[str, Any]] = {}
    plan = {"workers": 1, "threads": n_threads or _local_threads()}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(paths),
            initial=len(paths) - sum(len(chunks[c]) for c in pending),
            desc=f"score ({engine})",
            unit="img",
        )

    def on_stats(row: dict[str, Any]) -> None:
        c = int(row["chunk"])
        if c in stats:  # a retried task reported a chunk twice: count it once
            return
        stats[c] = row
        memory[int(row["pid"])] = {
            k: row[k]
            for k in (
                "pid",
                "private_before_load",
                "private_after_load",
                "private_now",
                "bank_shared",
            )
        }
        if bar is not None:
            bar.update(int(row["rows"]))

    def on_plan(w: int, t: int) -> None:
        plan.update(workers=w, threads=t)

    scorer_kwargs = {
        "model_path": model_path,
        "output": out_dir,
        "chunk_size": chunk,
        "batch_size": batch_size,
        "maps": maps_dir,
        "cwd": os.getcwd(),
        "fault": _fault,
        "trace": _trace,
    }
    try:
        if engine == "local":
            if pending:
                run_local_threads = plan["threads"]
                from ._local import run_local

                run_local(
                    chunks,
                    pending,
                    threads=run_local_threads,
                    scorer_kwargs=scorer_kwargs,
                    on_stats=on_stats,
                )
        else:
            from ._ray import run_ray

            run_ray(
                chunks,
                pending,
                address=address,
                workers=n_workers,
                threads=n_threads,
                model_sha256=model_sha,
                scorer_kwargs=scorer_kwargs,
                progress=progress,
                on_plan=on_plan,
                on_stats=on_stats,
            )
    finally:
        if bar is not None:
            bar.close()
    missing = sorted(set(range(len(chunks))) - done_chunks(out_dir))
    if missing:
        raise RuntimeError(
            f"{len(missing)} of {len(chunks)} chunks were not written to {out_dir} (first: "
            f"{missing[0]}); run again with resume=True to score only those"
        )
    failed = sum(int(s["failed"]) for s in stats.values()) + failed_in_parts(out_dir, done)
    wall = time.perf_counter() - t0
    scored = sum(len(chunks[c]) for c in pending)
    summary = ScoreSummary(
        output=out_dir,
        rows=len(paths),
        scored=scored,
        skipped=len(paths) - scored,
        failed=failed,
        wall_s=wall,
        images_per_s=scored / wall if wall > 0 else 0.0,
        engine=engine,
        workers=int(plan["workers"]),
        threads_per_worker=int(plan["threads"]),
        chunk_size=chunk,
        rewritten_chunks=sum(1 for s in stats.values() if not s.get("written", True)),
        worker_memory=sorted(memory.values(), key=lambda m: m["pid"]),
    )
    write_success(out_dir, summary.to_dict())
    return summary


def fit_many(
    models: Mapping[str, object],
    out_dir: str | os.PathLike[str],
    *,
    engine: str = "local",
    address: str | None = None,
    threads_per_worker: int | None = None,
    progress: bool = True,
    **detector_params: Any,
) -> FitSummary:
    """Fit one detector per entry of ``models`` and save each as ``out_dir/<name>.npz``.

    Parameters
    ----------
    models : mapping of str to inputs
        Model name (letters, digits, ``.``, ``_``, ``-``; not starting with ``.``) -> its
        defect-free training images: a folder (recursive), a glob, a file or a list of
        paths, as ``inputs`` of :func:`score`.
    out_dir : str or path-like
        Folder for the model files (written atomically; an existing file of the same name
        is replaced) and ``fit_summary.json``.
    engine : {"local", "ray"}
        ``"local"``: one after the other here; ``"ray"``: one Ray task per model
        (``threads_per_worker`` CPUs each, retried if its worker process dies).
    address : str or None
        Ray cluster address; None starts a local Ray (``engine="ray"`` only).
    threads_per_worker : int or None
        Torch threads per fit (``ray`` default 1; ``local`` default: this process's CPUs).
    progress : bool
        A progress bar over models on stderr.
    **detector_params
        :class:`structcore.Detector` parameters, the same for every model.

    Returns
    -------
    FitSummary
        A per-entry error (bad folder, too few images, a fit that raised) does not fail the
        job; it is in the entry's ``error``.

    Raises
    ------
    TypeError, ValueError
        Bad arguments (an unknown detector parameter, a bad name, an empty mapping).
    ImportError
        ``engine="ray"`` without Ray installed.
    """
    from ._fit import run_fit_many

    t0 = time.perf_counter()
    check_choice(engine, "engine", ENGINES)
    n_threads = _opt_int(threads_per_worker, "threads_per_worker")
    progress = _check_bool(progress, "progress")
    if address is not None and engine != "ray":
        raise ValueError("address is only used with engine='ray'")
    if engine == "ray":
        _require_ray()
    entries = run_fit_many(
        models,
        Path(out_dir),
        engine=engine,
        address=address,
        threads=n_threads,
        local_threads=_local_threads(),
        progress=progress,
        detector_params=detector_params,
    )
    summary = FitSummary(
        out_dir=os.path.abspath(os.fspath(out_dir)),
        entries=entries,
        fitted=sum(1 for e in entries if e["error"] is None),
        failed=sum(1 for e in entries if e["error"] is not None),
        wall_s=time.perf_counter() - t0,
        engine=engine,
    )
    from ._fit import write_fit_summary

    write_fit_summary(Path(out_dir), summary.to_dict())
    return summary
