"""The ``ray`` engine: a Ray Data actor pool over the pending chunks.

One item per chunk (``{"chunk": i, "paths": [...]}``) goes through ``map_batches`` with a
callable class: each actor loads the model once in its constructor, then scores one chunk per
call and writes its part file itself (``output`` must be a folder every node sees); only a
small statistics row per chunk comes back to the driver. Ray Data restarts an actor whose
process died and retries its in-flight chunks (its defaults, ``max_restarts=-1`` and
``max_task_retries=-1``; Ray 2.60 deprecates overriding them): a retried chunk whose part
file exists is not scored again, and one that is scored again replaces its part file with
the same rows, so every input ends up in the output once. Retries are not endless for an
image that kills its process every time: :class:`ChunkScorer` records each attempt in
``output/_attempts/`` and isolates and skips such an image (its row gets an ``error``).

The dataset starts from ``ray.data.from_items`` (already in the object store), so there is
no read stage competing with the actor pool for CPUs: the pool may take every CPU of a small
node without the read/actor-pool deadlock of ray-project/ray#44687. Images are read inside
the actors.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["plan_workers", "run_ray", "scorer_arguments"]

#: Most blocks handed to Ray Data (above, several chunks share a block: one task).
MAX_BLOCKS = 4096


def plan_workers(cpus: float, workers: int | None, threads: int | None) -> tuple[int, int]:
    """(workers, threads per worker) for a cluster of ``cpus`` CPUs.

    ``threads`` defaults to 1; ``workers`` to ``floor((cpus - 1) / threads)`` when the
    cluster has more than 2 CPUs (one left for the driver and Ray's own work), else
    ``floor(cpus / threads)``, at least 1.

    Raises
    ------
    ValueError
        ``workers * threads`` exceeds ``cpus`` (the pool could never start; threads would
        oversubscribe the cores).
    """
    t = 1 if threads is None else threads
    total = int(cpus)
    if workers is None:
        spare = total - 1 if total > 2 else total
        workers = max(1, spare // t)
    if workers * t > total:
        raise ValueError(
            f"workers ({workers}) x threads_per_worker ({t}) = {workers * t} exceeds the "
            f"{total} CPUs of the Ray cluster; lower one of them"
        )
    return workers, t


class _RayScorer:
    """The Ray Data callable class: a :class:`ChunkScorer` per actor."""

    def __init__(
        self,
        *,
        model_path: str,
        model_sha256: str,
        model_ref: list[Any],
        bank_ref: list[Any],
        **kwargs: Any,
    ) -> None:
        import ray

        from ._worker import ChunkScorer, file_sha256

        shared_bank = ray.get(bank_ref[0]) if bank_ref else None  # zero-copy, read-only
        tmpdir = None
        path = model_path
        if not (os.path.isfile(path) and file_sha256(path) == model_sha256):
            # Not on this node's disk: the copy the driver put in the object store.
            tmpdir = tempfile.mkdtemp(prefix="structcore-model-")
            path = os.path.join(tmpdir, "model.npz")
            data = ray.get(model_ref[0])
            with open(path, "wb") as fh:
                fh.write(data)
            del data
        try:
            self.scorer = ChunkScorer(path, shared_bank=shared_bank, **kwargs)
        finally:
            if tmpdir is not None:
                os.unlink(path)
                os.rmdir(tmpdir)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [
            self.scorer.score_chunk(int(c), [str(p) for p in paths])
            for c, paths in zip(batch["chunk"], batch["paths"], strict=True)
        ]
        return {k: np.asarray([r[k] for r in rows]) for k in rows[0]}


def _read_bank(model_path: str) -> np.ndarray | None:
    """The ``bank`` entry of a model file (documented in :mod:`structcore.io`), or None."""
    try:
        with np.load(model_path, allow_pickle=False) as z:
            return np.ascontiguousarray(z["bank"]) if "bank" in z.files else None
    except Exception:  # another layout: actors keep their own copy
        return None


def scorer_arguments(
    scorer_kwargs: dict[str, Any], model_sha256: str, threads: int
) -> dict[str, Any]:
    """The constructor arguments of every :class:`_RayScorer` actor (Ray must be running).

    The model file's bytes and its bank go into the object store once (``ray.put``), wrapped
    in lists so that Ray passes the references, not the values, to the constructor."""
    import ray

    model_path = scorer_kwargs["model_path"]
    with open(model_path, "rb") as fh:
        model_ref = ray.put(fh.read())
    bank = _read_bank(model_path)
    bank_ref = [ray.put(bank)] if bank is not None else []
    del bank
    return {
        **scorer_kwargs,
        "model_sha256": model_sha256,
        "model_ref": [model_ref],
        "bank_ref": bank_ref,
        "threads": threads,
    }


def run_ray(
    chunks: list[list[str]],
    pending: list[int],
    *,
    address: str | None,
    workers: int | None,
    threads: int | None,
    model_sha256: str,
    scorer_kwargs: dict[str, Any],
    progress: bool,
    on_plan: Callable[[int, int], None],
    on_stats: Callable[[dict[str, Any]], None],
) -> None:
    """Score ``pending`` chunks on a Ray cluster (started locally when ``address`` is None
    and Ray is not initialised yet; shut down again afterwards)."""
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(
            address=address,
            include_dashboard=False,
            logging_level=logging.INFO if progress else logging.WARNING,
        )
        started = True
    try:
        cpus = float(ray.cluster_resources().get("CPU", 0))
        n_workers, n_threads = plan_workers(cpus, workers, threads)
        on_plan(n_workers, n_threads)
        if not pending:
            return
        actor_kwargs = scorer_arguments(scorer_kwargs, model_sha256, n_threads)
        with warnings.catch_warnings():
            # Ray Data 2.60's DataContext warns about its own deprecated defaults
            # (use_push_based_shuffle, use_polars, ...) when it builds the default context:
            # nothing a caller can act on.
            warnings.filterwarnings("ignore", module=r"ray\.data\.context")
            ctx = ray.data.DataContext.get_current()
        saved = (ctx.enable_progress_bars, ctx.enable_operator_progress_bars)
        ctx.enable_progress_bars = False  # one bar over images, drawn by the caller
        ctx.enable_operator_progress_bars = False
        try:
            items = [{"chunk": c, "paths": chunks[c]} for c in pending]
            ds = ray.data.from_items(items, override_num_blocks=min(len(items), MAX_BLOCKS))
            out = ds.map_batches(
                _RayScorer,
                batch_size=1,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=n_workers, max_tasks_in_flight_per_actor=2),
                num_cpus=n_threads,
                fn_constructor_kwargs=actor_kwargs,
            )
            for row in out.iter_rows():
                on_stats(
                    {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
                )
        finally:
            ctx.enable_progress_bars, ctx.enable_operator_progress_bars = saved
    finally:
        if started:
            ray.shutdown()
