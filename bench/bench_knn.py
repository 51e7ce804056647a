"""Benchmark of structcore.knn against faiss IndexFlatL2, NumPy BLAS and the reference.

Usage::

    PYTHONPATH=python python bench/bench_knn.py            # the issue's shapes
    PYTHONPATH=python python bench/bench_knn.py --quick    # a small run (~20 s)

Prints a table and writes ``bench/results/knn.json``. Columns: median time, GFLOP/s and
% of the SGEMM peak from it, speed relative to faiss at the same thread count and to the
reference, the fraction of indices equal to structcore's float32 result, and the GFLOP/s
of the best round and, for 1-thread rows, from the median process CPU time (both less
sensitive to other processes on a shared machine).
Every implementation runs once per round, interleaved, and the median over rounds is
reported (the machine is shared: ratios measured side by side are what count).
FLOPs are counted as ``2 * Q * M * D``.

The single-thread SGEMM peak is measured in a subprocess by a large NumPy (OpenBLAS)
sgemm with ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` removed from its environment
(for that measurement only), reporting which OpenBLAS kernel ran (threadpoolctl).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import structcore
from structcore import reference
from structcore.kernels import knn

RESULTS = Path(__file__).resolve().parent / "results"

PEAK_CODE = r"""
import json, time, numpy as np
from threadpoolctl import threadpool_info, threadpool_limits
n = {n}
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
info = [i for i in threadpool_info() if i.get("user_api") == "blas"]
times = []
with threadpool_limits(1):
    a @ b
    for _ in range({repeats}):
        t = time.process_time(); a @ b; times.append(time.process_time() - t)
times.sort()
print(json.dumps({{"n": n, "median_s": times[len(times) // 2],
                   "gflops": 2 * n**3 / times[len(times) // 2] / 1e9,
                   "best_gflops": 2 * n**3 / times[0] / 1e9,
                   "blas": [{{k: i.get(k) for k in ("internal_api", "version", "architecture",
                                                    "filepath")}} for i in info]}}))
"""


def sgemm_peak(n: int, repeats: int) -> dict:
    """Single-thread NumPy sgemm GFLOP/s with OPENBLAS_CORETYPE/L2_SIZE unset."""
    unset = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    out = subprocess.run(
        [sys.executable, "-c", PEAK_CODE.format(n=n, repeats=repeats)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def numpy_blas_knn(q: np.ndarray, b: np.ndarray, k: int, chunk: int = 128) -> tuple:
    """Norms trick with one sgemm per chunk of queries, argpartition top-k (O(chunk x M))."""
    bn = np.einsum("ij,ij->i", b, b)
    qn = np.einsum("ij,ij->i", q, q)
    dist = np.empty((q.shape[0], k), np.float32)
    idx = np.empty((q.shape[0], k), np.int64)
    for s in range(0, q.shape[0], chunk):
        d2 = qn[s : s + chunk, None] + bn[None, :] - 2 * (q[s : s + chunk] @ b.T)
        part = np.argpartition(d2, k - 1, axis=1)[:, :k] if k < b.shape[0] else np.argsort(d2, 1)
        pd = np.take_along_axis(d2, part, 1)
        order = np.argsort(pd, axis=1, kind="stable")
        idx[s : s + chunk] = np.take_along_axis(part, order, 1)
        dist[s : s + chunk] = np.sqrt(np.maximum(np.take_along_axis(pd, order, 1), 0))
    return dist, idx


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shapes, fewer rounds")
    ap.add_argument("--rounds", type=int, default=None, help="timing rounds (median)")
    ap.add_argument("--out", type=Path, default=RESULTS / "knn.json")
    args = ap.parse_args()

    import faiss
    from threadpoolctl import threadpool_limits

    if args.quick:
        n_q, n_b, dim, rounds, ref_q, peak_n = 196, 4096, 1024, 3, 4, 1024
    else:
        n_q, n_b, dim, rounds, ref_q, peak_n = 784, 16384, 1024, 5, 8, 2048
    rounds = args.rounds or rounds
    flops = 2.0 * n_q * n_b * dim

    print(structcore.build_info())
    peak = sgemm_peak(peak_n, 5 if args.quick else 7)
    print(
        f"single-thread SGEMM peak (numpy/OpenBLAS {peak['blas']}): "
        f"{peak['gflops']:.1f} GFLOP/s (median), {peak['best_gflops']:.1f} (best)"
    )

    rng = np.random.default_rng(0)
    queries = rng.standard_normal((n_q, dim), dtype=np.float32)
    bank = rng.standard_normal((n_b, dim), dtype=np.float32)
    bank16 = bank.astype(np.float16)
    index = faiss.IndexFlatL2(dim)
    index.add(bank)

    rows: list[dict] = []
    for k in (1, 9):

        def faiss_run(t: int, k: int = k) -> tuple:
            faiss.omp_set_num_threads(t)
            d2, i = index.search(queries, k)
            return np.sqrt(np.maximum(d2, 0)), i

        def blas_run(k: int = k) -> tuple:
            with threadpool_limits(1):
                return numpy_blas_knn(queries, bank, k)

        impls: dict[str, tuple[int, Callable[[], tuple]]] = {
            "structcore f32": (1, lambda k=k: knn(queries, bank, k, threads=1)),
            "structcore f32 2T": (2, lambda k=k: knn(queries, bank, k, threads=2)),
            "structcore f16 bank": (1, lambda k=k: knn(queries, bank16, k, threads=1)),
            "structcore f16 bank 2T": (2, lambda k=k: knn(queries, bank16, k, threads=2)),
            "faiss IndexFlatL2": (1, lambda: faiss_run(1)),
            "faiss IndexFlatL2 2T": (2, lambda: faiss_run(2)),
            "numpy BLAS (norms trick)": (1, blas_run),
        }
        times: dict[str, list[float]] = {name: [] for name in impls}
        cpu: dict[str, list[float]] = {name: [] for name in impls}
        outputs: dict[str, tuple] = {}
        for name, (_, fn) in impls.items():  # warm-up (and results)
            outputs[name] = fn()
        for _ in range(rounds):
            for name, (_, fn) in impls.items():
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
        # the reference, one query at a time, on a subset; time scaled to all queries
        t0 = time.perf_counter()
        _, ref_i = reference.knn(queries[:ref_q], bank, k)
        ref_time = (time.perf_counter() - t0) * n_q / ref_q

        sc_i = outputs["structcore f32"][1]
        med = {name: statistics.median(ts) for name, ts in times.items()}
        best = {name: min(ts) for name, ts in times.items()}
        med["reference (scaled)"] = ref_time
        best["reference (scaled)"] = ref_time
        for name, t in med.items():
            threads = impls[name][0] if name in impls else 1
            faiss_same = med["faiss IndexFlatL2 2T" if threads == 2 else "faiss IndexFlatL2"]
            row = {
                "shape": f"{n_q}x{dim} vs {n_b}x{dim}",
                "k": k,
                "implementation": name,
                "threads": threads,
                "median_s": t,
                "best_s": best[name],
                "best_gflops": flops / best[name] / 1e9,
                # process CPU time: for 1-thread rows a contention-robust throughput figure
                "cpu_s": statistics.median(cpu[name]) if name in cpu else None,
                "gflops": flops / t / 1e9,
                "pct_sgemm_peak": 100 * flops / t / 1e9 / peak["gflops"],
                "speed_vs_faiss_same_threads": faiss_same / t,
                "speed_vs_reference": ref_time / t,
            }
            if name in outputs:
                row["indices_equal_structcore_f32"] = float(np.mean(outputs[name][1] == sc_i))
            else:
                row["indices_equal_structcore_f32"] = float(np.mean(ref_i == sc_i[:ref_q]))
            rows.append(row)
        for kind in ("f32", "f16 bank"):
            one, two = med[f"structcore {kind}"], med[f"structcore {kind} 2T"]
            rows.append(
                {
                    "shape": rows[-1]["shape"],
                    "k": k,
                    "implementation": f"structcore {kind}: 2 threads / 1 thread",
                    "speedup": one / two,
                }
            )
        rows.append(
            {
                "shape": rows[-1]["shape"],
                "k": k,
                "implementation": "structcore f16 bank / f32 speed (1 thread)",
                "speedup": med["structcore f32"] / med["structcore f16 bank"],
            }
        )

    header = (
        f"{'k':>2} {'implementation':<27} {'thr':>3} {'median s':>9} {'GFLOP/s':>8} "
        f"{'%peak':>6} {'x faiss':>8} {'x ref':>8} {'=idx':>6} {'best GF/s':>9} {'cpu GF/s':>8}"
    )
    print(f"\nshape: queries {n_q}x{dim}, bank {n_b}x{dim}; {rounds} rounds, medians")
    print(header)
    print("-" * len(header))
    for r in rows:
        if "speedup" in r:
            print(f"{r['k']:>2} {r['implementation']:<60} {r['speedup']:.2f}x")
            continue
        cpu_s = r["cpu_s"]
        cpu_gf = f"{flops / cpu_s / 1e9:.1f}" if r["threads"] == 1 and cpu_s else "-"
        print(
            f"{r['k']:>2} {r['implementation']:<27} {r['threads']:>3} {r['median_s']:>9.4f} "
            f"{r['gflops']:>8.1f} {r['pct_sgemm_peak']:>6.1f} "
            f"{r['speed_vs_faiss_same_threads']:>8.2f} {r['speed_vs_reference']:>8.1f} "
            f"{r['indices_equal_structcore_f32']:>6.3f} {r['best_gflops']:>9.1f} {cpu_gf:>8}"
        )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "bench": "knn",
        "build_info": structcore.build_info(),
        "machine": {
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "faiss": faiss.__version__,
        },
        "quick": args.quick,
        "rounds": rounds,
        "sgemm_peak": peak,
        "results": rows,
    }
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
