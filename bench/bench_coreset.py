"""Benchmark of the greedy k-center coreset: structcore vs its NumPy reference and anomalib.

Usage::

    PYTHONPATH=python python bench/bench_coreset.py           # 200,000 x 1024, n = 1% and 10%
    PYTHONPATH=python python bench/bench_coreset.py --quick   # 20,000 x 1024, a minute

Prints a table and writes ``bench/results/coreset.json``. Features are i.i.d. Gaussian float32
(seeded). Every implementation runs single-threaded (BLAS and torch threads capped to 1 with
threadpoolctl / torch.set_num_threads) unless the row says 2 threads.

Each greedy step is one full pass over all points, so its cost does not depend on the step:
the NumPy reference and anomalib's ``KCenterGreedy`` (anomalib 2.7) are timed on two short
runs (n1 < n2 steps, medians of --repeats) and their time at the target n is extrapolated
linearly, ``t(n) = t(n1) + (n - n1) * (t(n2) - t(n1)) / (n2 - n1)``
(marked "extrapolated"); structcore is timed on the full n. Ratios compare medians measured
side by side in this one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import structcore
from _common import blas_threads
from structcore import kernels, reference

os.environ.setdefault("TQDM_DISABLE", "1")  # anomalib's progress bar


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def extrapolated(fn: Callable[[int], object], n: int, n1: int, n2: int, repeats: int) -> float:
    t1 = median_time(lambda: fn(n1), repeats)
    t2 = median_time(lambda: fn(n2), repeats)
    per_step = max(t2 - t1, 0.0) / (n2 - n1)
    return t1 + (n - n1) * per_step


def anomalib_runner(features: np.ndarray) -> Callable[[int], object] | None:
    try:
        import torch
        from anomalib.models.components.sampling import KCenterGreedy
    except Exception as exc:  # any import failure means "not available"
        print(f"anomalib not available ({type(exc).__name__}: {exc}); skipped")
        return None
    emb = torch.from_numpy(features)
    n_points = features.shape[0]

    def run(n: int) -> object:
        torch.manual_seed(0)
        # sampling_ratio such that int(n_points * ratio) == n
        return KCenterGreedy(emb, sampling_ratio=(n + 0.5) / n_points).select_coreset_idxs()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 points instead of 200,000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-anomalib", action="store_true")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "coreset.json"
    )
    args = parser.parse_args()

    n_points, dim = (20_000, 1024) if args.quick else (200_000, 1024)
    fractions = (0.01, 0.10)
    ref_steps = (1, 41)
    features = np.random.default_rng(0).standard_normal((n_points, dim), dtype=np.float32)
    print(structcore.build_info())
    print(f"features {n_points} x {dim} float32 (Gaussian), projection_dim=128")

    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    anomalib_run = None if args.no_anomalib else anomalib_runner(features)

    rows: list[dict[str, Any]] = []
    for frac in fractions:
        n = round(frac * n_points)
        timings: dict[str, tuple[float, str]] = {}
        with blas_threads(1):
            t_proj = median_time(lambda: kernels.coreset(features, 1), args.repeats)
            timings["structcore (1 thread)"] = (
                median_time(lambda n=n: kernels.coreset(features, n, threads=1), args.repeats),
                "measured",
            )
        with blas_threads(2):
            timings["structcore (2 threads)"] = (
                median_time(lambda n=n: kernels.coreset(features, n, threads=2), args.repeats),
                "measured",
            )
        with blas_threads(1):
            timings["numpy reference"] = (
                extrapolated(lambda m: reference.coreset(features, m), n, *ref_steps, args.repeats),
                f"extrapolated from n={ref_steps[0]},{ref_steps[1]}",
            )
            if anomalib_run is not None:
                a_steps = (2, 42)
                timings["anomalib 2.7 KCenterGreedy"] = (
                    extrapolated(anomalib_run, n, *a_steps, args.repeats),
                    f"extrapolated from n={a_steps[0]},{a_steps[1]}",
                )
        ours = timings["structcore (1 thread)"][0]
        for name, (sec, how) in timings.items():
            rows.append(
                {
                    "shape": [n_points, dim],
                    "n": n,
                    "fraction": frac,
                    "implementation": name,
                    "median_s": sec,
                    "timing": how,
                    "points_per_s": n * n_points / sec,
                    "speedup_of_structcore_1t": sec / ours,
                    "projection_s": t_proj if name.startswith("structcore") else None,
                }
            )

    print(
        f"\n{'n':>7} {'implementation':<28} {'median s':>10} {'Gpt-dist/s':>11} "
        f"{'structcore 1t is x faster':>26}  timing"
    )
    for r in rows:
        print(
            f"{r['n']:>7} {r['implementation']:<28} {r['median_s']:>10.3f} "
            f"{r['points_per_s'] / 1e9:>11.3f} {r['speedup_of_structcore_1t']:>26.1f}  "
            f"{r['timing']}"
        )
    proj = [r["projection_s"] for r in rows if r["projection_s"] is not None]
    print(f"(structcore's projection + float16 rounding, included above: {proj[0]:.3f} s)")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "coreset",
        "build_info": structcore.build_info(),
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "quick": args.quick,
        "rows": rows,
    }
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
