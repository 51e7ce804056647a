"""Fleet fitting for :func:`structcore.distributed.fit_many`: one model per entry."""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._inputs import expand_inputs, is_uri

__all__ = ["fit_one", "run_fit_many", "write_fit_summary"]

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
SUMMARY_FILE = "fit_summary.json"


def _absolute(inputs: object, cwd: str) -> object:
    """Relative local paths made absolute against the driver's ``cwd`` (workers may run
    elsewhere)."""

    def fix(p: object) -> object:
        if isinstance(p, (str, os.PathLike)):
            s = os.fspath(p)
            if isinstance(s, str) and not is_uri(s) and not os.path.isabs(s):
                return os.path.join(cwd, s)
            return s
        return p

    if isinstance(inputs, (str, os.PathLike)):
        return fix(inputs)
    if isinstance(inputs, (list, tuple)):
        return [fix(p) for p in inputs]
    return inputs


def fit_one(
    name: str, inputs: object, out_dir: str, params: dict[str, Any], threads: int
) -> dict[str, Any]:
    """Fit and save one model; never raises for a problem of this entry (see ``error``)."""
    t0 = time.perf_counter()
    entry: dict[str, Any] = {"name": name, "model": None, "n_train": 0, "fit_s": 0.0}
    try:
        import torch

        from ..detector import Detector

        paths = expand_inputs(inputs)
        entry["n_train"] = len(paths)
        torch.set_num_threads(threads)
        det = Detector(**params)
        if params.get("threads") is None:
            det.threads = threads
        det.progress = False
        det.fit(paths)
        final = os.path.join(out_dir, f"{name}.npz")
        tmp = os.path.join(out_dir, f".{name}.tmp-{uuid.uuid4().hex}.npz")
        try:
            det.save(tmp)
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        entry["model"] = final
        entry["error"] = None
    except Exception as exc:  # this entry's failure, reported, not raised
        entry["error"] = f"{type(exc).__name__}: {exc}"
    entry["fit_s"] = time.perf_counter() - t0
    return entry


def run_fit_many(
    models: Mapping[str, object],
    out_dir: Path,
    *,
    engine: str,
    address: str | None,
    threads: int | None,
    local_threads: int,
    progress: bool,
    detector_params: dict[str, Any],
) -> list[dict[str, Any]]:
    """Validate, then fit every entry locally or as Ray tasks; entries in name order."""
    if not isinstance(models, Mapping):
        raise TypeError(f"models must be a mapping of name -> inputs; got {type(models).__name__}")
    if not models:
        raise ValueError("models is empty: give at least one name -> training images")
    for name in models:
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise ValueError(
                f"models: name {name!r} must be letters, digits, '.', '_' or '-', not "
                "starting with '.' or '-' (it becomes the file name <name>.npz)"
            )
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a folder path; got {type(out_dir).__name__}")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ValueError(f"out_dir {str(out_dir)!r} is a file; give a folder")
    params = dict(detector_params)
    params.pop("progress", None)
    from ..detector import Detector

    try:
        # unknown names and bad values fail here, before any work
        Detector(**params).validate_params()
    except TypeError as exc:
        raise TypeError(f"detector_params: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"detector_params: {exc}") from None
    out = os.path.abspath(os.fspath(out_dir))
    os.makedirs(out, exist_ok=True)
    cwd = os.getcwd()
    names = sorted(models)
    jobs = [(n, _absolute(models[n], cwd)) for n in names]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc=f"fit-many ({engine})", unit="model")
    results: dict[str, dict[str, Any]] = {}
    try:
        if engine == "local":
            import torch

            before = torch.get_num_threads()
            try:
                for n, inputs in jobs:
                    results[n] = fit_one(n, inputs, out, params, threads or local_threads)
                    if bar is not None:
                        bar.update(1)
            finally:
                torch.set_num_threads(before)
        else:
            results = _run_ray(jobs, out, params, threads or 1, address, bar)
    finally:
        if bar is not None:
            bar.close()
    return [results[n] for n in names]


def _run_ray(
    jobs: list[tuple[str, object]],
    out: str,
    params: dict[str, Any],
    threads: int,
    address: str | None,
    bar: Any,
) -> dict[str, dict[str, Any]]:
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
        started = True
    try:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if threads > cpus:
            raise ValueError(
                f"threads_per_worker ({threads}) exceeds the {cpus} CPUs of the Ray cluster"
            )
        task = ray.remote(num_cpus=threads, max_retries=3)(fit_one)
        pending = {task.remote(n, inputs, out, params, threads): n for n, inputs in jobs}
        results: dict[str, dict[str, Any]] = {}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                name = pending.pop(ref)
                try:
                    results[name] = ray.get(ref)
                except ray.exceptions.RayError as exc:  # its worker died past the retries
                    results[name] = {
                        "name": name,
                        "model": None,
                        "n_train": 0,
                        "fit_s": 0.0,
                        "error": f"{type(exc).__name__}: {exc}",
                    }
                if bar is not None:
                    bar.update(1)
        return results
    finally:
        if started:
            ray.shutdown()


def write_fit_summary(out_dir: Path, summary: dict[str, Any]) -> None:
    """``out_dir/fit_summary.json``, written atomically."""
    from ._sink import atomic_write

    text = (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode("utf-8")
    atomic_write(Path(out_dir) / SUMMARY_FILE, lambda fh: fh.write(text))
