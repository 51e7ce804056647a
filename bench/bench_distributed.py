"""Batch scoring past one process: ``structcore.distributed.score``, local vs Ray.

Usage::

    TORCH_HOME=../shared/weights PYTHONPATH=python \\
        python bench/bench_distributed.py --images 512 --workers 2

Needs the ``ray`` extra and MVTec AD *bottle* with torchvision's MobileNetV2 weights under
``../shared`` (``--root``, ``TORCH_HOME``). Prints a table and writes
``bench/results/distributed.json``.

What is measured, in interleaved rounds (``--repeats``, medians), on the same inputs:

* a MobileNetV2 detector (the library defaults otherwise) fitted on ``--train`` bottle
  train images and saved (its file size is reported);
* ``--images`` input paths: symbolic links to the bottle train and test images, repeated
  (each link a distinct path: a distinct output row);
* ``local``: ``score(engine="local")`` in this process, ``--workers`` torch threads;
* ``ray``: ``score(engine="ray", workers=W, threads_per_worker=1)``, Ray started by the call
  and shut down after it: the wall time includes ``ray.init``, the actors' start-up (torch
  import, model load) and the shutdown;
* ``ray+kill``: the same with one actor SIGKILLed (the test-only fault hook) after its
  chunk was scored but before it was written, once ``--kill-after`` rows are on disk.

Reported: images/s (rows / wall seconds); the end-to-end efficiency ``ray / local``; for the
kill run the unique rows, their largest difference to ``Detector.predict`` (the reference,
computed once per distinct image), the images scored more than once (from the attempt
trace) and the extra time over the same round's ``ray`` run; per actor, its private memory
(USS) before and after loading the model and whether the memory bank is the object store's
shared copy. With ``--memory-train N`` (``--repeats 0`` runs only this part) a second, large
model is fitted (N train images at ``--memory-ratio``, default 1.0: every patch in the bank)
and both models score a few images with each engine: the difference of the workers' private
memory gained at load (large - small) is what the model file's content costs each worker
(``ray``: the object store's shared bank; ``local``: this process's own copy; the local gains
themselves also include heap trimmed from this process's earlier work). Nothing here asserts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import cpu_model, cpu_pressure, fit_bottle_model, load_avg, write_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "distributed.json"


def _memory_rows(
    args: argparse.Namespace, work: Path, paths: list[str], small: Path
) -> dict[str, Any]:
    """Private memory each worker gains by loading the model, for the bench's small model and
    a large one (``--memory-train`` images at ``--memory-ratio``: a bank of tens of MiB),
    with ``ray`` (bank from the object store, shared) and ``local`` (this process, own copy).

    The difference large - small is what the model file's content costs per worker; the
    rest of each gain is the backbone (torchvision modules and weights, from the torch
    cache), which is the same for both models."""
    from structcore.distributed import score

    large = work / "model-large.npz"
    t0 = time.perf_counter()
    fit_bottle_model(args.root, args.memory_train, large, args.memory_ratio)
    print(
        f"\nmemory: large model {large.stat().st_size / 2**20:.1f} MiB (fit "
        f"{time.perf_counter() - t0:.1f} s on {args.memory_train} images, coreset ratio "
        f"{args.memory_ratio}), small model {small.stat().st_size / 2**20:.1f} MiB",
        flush=True,
    )
    few = paths[: 2 * args.workers * args.batch_size]
    out: dict[str, Any] = {"large_model_bytes": large.stat().st_size}
    for engine in ("ray", "local"):
        gains: dict[str, list[float]] = {}
        for label, model in (("small", small), ("large", large)):
            kw: dict[str, Any] = {"batch_size": args.batch_size, "progress": False}
            if engine == "ray":
                kw.update(engine="ray", workers=args.workers, threads_per_worker=1)
            else:
                kw.update(engine="local", threads_per_worker=args.workers)
            s = score(few, model, work / f"mem-{engine}-{label}", **kw)
            gains[label] = [
                (m["private_after_load"] - m["private_before_load"]) / 2**20
                for m in s.worker_memory
            ]
            out[f"{engine}_{label}"] = s.worker_memory
        diff = [b - a for a, b in zip(gains["small"], gains["large"], strict=False)]
        out[f"{engine}_model_cost_mib"] = diff
        print(
            f"memory {engine:5s}: gain at load small {[f'{g:.1f}' for g in gains['small']]} "
            f"MiB, large {[f'{g:.1f}' for g in gains['large']]} MiB: the large model's "
            f"content costs {[f'{d:+.1f}' for d in diff]} MiB per worker (file "
            f"{large.stat().st_size / 2**20:.1f} MiB)",
            flush=True,
        )
    return out


def _inputs(root: Path, n: int, folder: Path) -> tuple[list[str], dict[str, str]]:
    """``n`` distinct link paths over the bottle images; link -> target."""
    images = sorted(str(p) for p in root.glob("t*/*/*.png"))
    folder.mkdir(parents=True)
    links: dict[str, str] = {}
    for i in range(n):
        src = images[i % len(images)]
        dst = folder / f"{i:06d}_{Path(src).parent.name}_{Path(src).name}"
        dst.symlink_to(src)
        links[str(dst)] = src
    return sorted(links), links


def _rescored(trace: Path) -> int:
    starts: dict[int, list[int]] = {}
    for log in trace.glob("*.log"):
        for line in log.read_text().splitlines():
            c, n = (int(x) for x in line.split())
            starts.setdefault(c, []).append(n)
    return sum(sum(v[1:]) for v in starts.values())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--kill-after", type=int, default=400)
    ap.add_argument("--train", type=int, default=50, help="bottle train images for the model")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--root", type=Path, default=ROOT.parent / "shared/datasets/mvtec_ad/bottle")
    ap.add_argument(
        "--address",
        default=None,
        help="Ray address of a running cluster (e.g. 'auto' after `ray start --head`): the "
        "ray rows then connect instead of starting Ray (start-up = connect + actors)",
    )
    ap.add_argument(
        "--memory-train",
        type=int,
        default=0,
        help="also fit a large model on this many bottle train images (0: skip) and report "
        "the private memory its content costs each worker (ray: shared bank; local: a copy)",
    )
    ap.add_argument("--memory-ratio", type=float, default=1.0, help="the large model's coreset")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if not args.root.is_dir():
        print(f"needs MVTec AD bottle at {args.root} (--root)", file=sys.stderr)
        return 1
    os.environ.setdefault("TORCH_HOME", str(ROOT.parent / "shared" / "weights"))
    import ray

    from structcore import Detector
    from structcore.distributed import read_scores, score

    work = Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    model = work / "model.npz"
    t0 = time.perf_counter()
    fit_bottle_model(args.root, args.train, model)
    fit_s = time.perf_counter() - t0
    paths, links = _inputs(args.root, args.images, work / "inputs")
    distinct = sorted(set(links.values()))
    ref = Detector.load(model).predict(distinct, batch_size=args.batch_size)
    ref_score = dict(zip(distinct, ref.score.tolist(), strict=True))
    model_bytes = model.stat().st_size
    print(
        f"CPU: {cpu_model()}; load {load_avg()}; model {model_bytes / 2**20:.1f} MiB "
        f"(fit {fit_s:.1f} s on {args.train} images); {args.images} images, "
        f"{args.workers} workers, batch {args.batch_size}",
        flush=True,
    )

    rows: dict[str, list[dict[str, Any]]] = {"local": [], "ray": [], "ray+kill": []}
    for r in range(args.repeats):
        for name in rows:
            out = work / f"out-{name}-{r}"
            kw: dict[str, Any] = {"batch_size": args.batch_size, "progress": False}
            trace = None
            if name == "local":
                kw.update(engine="local", threads_per_worker=args.workers)
            else:
                kw.update(
                    engine="ray", workers=args.workers, threads_per_worker=1, address=args.address
                )
            if name == "ray+kill":
                trace = work / f"trace-{r}"
                trace.mkdir()
                kw["_trace"] = str(trace)
                kw["_fault"] = {
                    "after_images": args.kill_after,
                    "phase": "after_score",
                    "marker": str(work / f"killed-{r}"),
                }
            load = load_avg()
            t = time.perf_counter()
            s = score(paths, model, out, **kw)
            wall = time.perf_counter() - t
            assert not ray.is_initialized()
            table = read_scores(out)
            got = table.column("score").to_numpy(zero_copy_only=False).astype(float)
            want = np.array([ref_score[links[p]] for p in table.column("path").to_pylist()])
            rec: dict[str, Any] = {
                "wall_s": wall,
                "images_per_s": args.images / wall,
                "rows": table.num_rows,
                "unique_rows": len(set(table.column("path").to_pylist())),
                "max_abs_diff": float(np.max(np.abs(got - want))),
                "failed": s.failed,
                "load_before": load,
                "cpu_pressure": cpu_pressure(),
                "worker_memory": s.worker_memory,
            }
            if trace is not None:
                rec["killed"] = (work / f"killed-{r}").exists()
                rec["rescored_images"] = _rescored(trace)
            rows[name].append(rec)
            print(
                f"round {r} {name:9s} {wall:6.1f} s  {args.images / wall:6.1f} img/s  "
                f"rows {rec['unique_rows']}  max|diff| {rec['max_abs_diff']:.1e}"
                + (f"  re-scored {rec['rescored_images']}" if trace else ""),
                flush=True,
            )

    med: dict[str, float] = {}
    extra: list[float] = []
    if args.repeats:
        med, extra = _summarise(rows, args, model_bytes)
    memory = _memory_rows(args, work, paths, model) if args.memory_train > 0 else None
    write_results(
        args.out,
        args,
        {
            "model_bytes": model_bytes,
            "median_images_per_s": med,
            "efficiency_ray_vs_local": med["ray"] / med["local"] if med else None,
            "kill_extra_time": extra,
            "runs": rows,
            "memory": memory,
        },
    )
    return 0


def _summarise(
    rows: dict[str, list[dict[str, Any]]], args: argparse.Namespace, model_bytes: int
) -> tuple[dict[str, float], list[float]]:
    """Print the timing table, the kill figures and the actors' memory; (medians, extra)."""
    med = {k: statistics.median(x["images_per_s"] for x in v) for k, v in rows.items()}
    extra = [
        k["wall_s"] / n["wall_s"] - 1 for k, n in zip(rows["ray+kill"], rows["ray"], strict=True)
    ]
    mem = rows["ray"][-1]["worker_memory"]
    print(f"\n| run | images/s (median of {args.repeats}) | vs local |")
    print("|---|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.1f} | {v / med['local']:.2f} |")
    kills = rows["ray+kill"]
    print(
        f"\nkill: unique rows {[x['unique_rows'] for x in kills]}, re-scored "
        f"{[x['rescored_images'] for x in kills]} (bound {args.workers * args.batch_size}), "
        f"extra time {[f'{e:+.1%}' for e in extra]} (median {statistics.median(extra):+.1%}), "
        f"max|diff| {max(x['max_abs_diff'] for x in kills):.1e}"
    )
    for m in mem:
        print(
            f"actor {m['pid']}: private {m['private_before_load'] / 2**20:.0f} MiB before the "
            f"model, {m['private_after_load'] / 2**20:.0f} after (+"
            f"{(m['private_after_load'] - m['private_before_load']) / 2**20:.1f} MiB; model file "
            f"{model_bytes / 2**20:.1f} MiB), {m['private_now'] / 2**20:.0f} at the end; bank "
            f"shared: {m['bank_shared']}"
        )
    return med, extra


if __name__ == "__main__":
    raise SystemExit(main())
