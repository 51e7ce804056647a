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
(for that measurement only), reporting which OpenBLAS kernel ran (threadpoolctl); a second
one with ``OPENBLAS_CORETYPE=Haswell`` gives the AVX2 sgemm peak that the
``STRUCTCORE_SIMD=avx2`` row (the float32 path at the AVX2 level) is compared with.

The run starts by printing the kNN path structcore chose on this CPU and why
(``_core.knn_info()``: candidate pass, tile, float32 depth chunk, cpuid features) and which
faiss build and BLAS loaded. ``--torch`` adds two measurements of the oneDNN route (issue 14):
torch's ``bf16 @ bf16.T`` alone, and a complete candidate pass built on it (bf16 matmul,
proven bound, candidates, exact float64 re-ranking; :func:`torch_bf16_knn`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import structcore
from _common import cpu_flags, cpu_model, load_avg
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


def sgemm_peak(n: int, repeats: int, coretype: str | None = None) -> dict:
    """Single-thread NumPy sgemm GFLOP/s with OPENBLAS_CORETYPE/L2_SIZE unset (or the
    core type forced to ``coretype``, e.g. "Haswell" for the AVX2 kernels)."""
    unset = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
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


def torch_bf16_knn(q: np.ndarray, b: np.ndarray, k: int, chunk: int = 1024) -> tuple:
    """The oneDNN route as a complete exact kNN: torch ``bf16 @ bf16.T`` candidates.

    Both arrays centred on the mean of <= 256 evenly spaced bank rows (float32), rounded to
    bf16; S = q~ @ b~.T by torch (oneDNN: AMX, AVX-512 BF16 or AVX2 as the CPU allows; the
    result comes back as bf16). d2~ = |q|^2 + |b|^2 - 2 S with the bound of knn.hpp plus the
    rounding of S to bf16 (2^-8 |q| |b|); every row with d2~ - E <= (k-th smallest d2~ + E)
    is re-ranked exactly in float64 (ties: lower index). Prototype for the measurement only.
    """
    import torch

    n_b, dim = b.shape
    m = min(n_b, 256)
    centre = b[np.arange(m) * n_b // m].astype(np.float64).mean(0).astype(np.float32)
    bc = torch.from_numpy(b - centre)
    bn = (bc * bc).sum(1)
    br = bn.sqrt()
    bb = bc.to(torch.bfloat16)
    u, v = 2.0**-24, 2.0**-8
    g = dim * u / (1 - dim * u)
    c1 = 2 * ((2 * v + v * v) * (1 + g) + g) * 1.01 + 4.1 * u * (1 + g) + 2 * v * 1.01
    c2 = (dim + 10) * u / (1 - (dim + 10) * u) * 1.01 + 8 * u + 2.1 * u * (1 + g)
    dist = np.empty((q.shape[0], k), np.float32)
    idx = np.empty((q.shape[0], k), np.int64)
    b64 = b.astype(np.float64)
    for s0 in range(0, q.shape[0], chunk):
        qc = torch.from_numpy(q[s0 : s0 + chunk] - centre)
        qn = (qc * qc).sum(1)
        s = torch.matmul(qc.to(torch.bfloat16), bb.T).float()
        d2 = qn[:, None] + bn[None, :] - 2 * s
        e = c1 * qn.sqrt()[:, None] * br[None, :] + c2 * (qn[:, None] + bn[None, :])
        tau = torch.kthvalue(d2 + e, k, dim=1).values
        rows, cols = torch.nonzero(d2 - e <= tau[:, None], as_tuple=True)
        rows, cols = rows.numpy(), cols.numpy()
        q64 = q[s0 : s0 + chunk].astype(np.float64)
        exact = ((q64[rows] - b64[cols]) ** 2).sum(1)
        order = np.lexsort((cols, exact, rows))
        rows, cols, exact = rows[order], cols[order], exact[order]
        starts = np.searchsorted(rows, np.arange(len(q64)))
        take = starts[:, None] + np.arange(k)[None, :]
        idx[s0 : s0 + chunk] = cols[take]
        dist[s0 : s0 + chunk] = np.sqrt(exact[take]).astype(np.float32)
    return dist, idx


def wrn_features(n_bank: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """PatchCore features of structcore's default backbone, WideResNet-50-2 (layer2 + layer3,
    channel pooling to ``dim``), with a seeded random initialisation (its ImageNet file is not
    available offline; post-ReLU statistics, the large common mean above all, are what make
    these features hard for a float32 norms-trick search). Same images as
    :func:`patchcore_features`."""
    from structcore import Detector

    root = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "mvtec_ad"
    root = root / "bottle"
    det = Detector("wide_resnet50_2", weights=None, dim=dim, seed=0, threads=1)
    train = sorted((root / "train" / "good").glob("*.png"))
    n_img = -(-n_bank // 784)
    bank = det.features([str(p) for p in train[:n_img]]).reshape(-1, dim)[:n_bank]
    test = [str(sorted((root / "test" / "broken_large").glob("*.png"))[0])]
    queries = det.features(test).reshape(-1, dim)
    return np.ascontiguousarray(queries), np.ascontiguousarray(bank)


def patchcore_features(n_bank: int) -> tuple[np.ndarray, np.ndarray]:
    """Real PatchCore features: MobileNetV2 (features.6 + features.13, 3x3 average,
    bilinear upsampling, channel pooling to 1024) of MVTec AD bottle from ../shared.

    Returns (queries, bank): the 784 patches of one defective test image and the first
    ``n_bank`` patches of the train/good images.
    """
    shared = Path(__file__).resolve().parents[1].parent / "shared"
    os.environ.setdefault("TORCH_HOME", str(shared / "weights"))
    import torch
    import torchvision
    from PIL import Image
    from torchvision import transforms

    root = shared / "datasets" / "mvtec_ad" / "bottle"
    model = torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1").eval()
    tf = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )

    def features(paths: list[Path]) -> np.ndarray:
        x = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths])
        maps = {}
        with torch.no_grad():
            for i, layer in enumerate(model.features[:14]):
                x = layer(x)
                if i in (6, 13):
                    maps[i] = torch.nn.functional.avg_pool2d(x, 3, 1, 1)
            deep = torch.nn.functional.interpolate(
                maps[13], size=maps[6].shape[-2:], mode="bilinear", align_corners=False
            )
            f = torch.cat([maps[6], deep], 1).permute(0, 2, 3, 1).reshape(-1, 128)
            f = torch.nn.functional.adaptive_avg_pool1d(f[:, None, :], 1024)[:, 0]
        return f.numpy().astype(np.float32)

    train = sorted((root / "train" / "good").glob("*.png"))
    n_img = -(-n_bank // 784)
    bank = features(train[:n_img])[:n_bank]
    queries = features([sorted((root / "test" / "broken_large").glob("*.png"))[0]])
    return np.ascontiguousarray(queries), np.ascontiguousarray(bank)


def run_dataset(
    label: str,
    queries: np.ndarray,
    bank: np.ndarray,
    rounds: int,
    ref_q: int,
    peak: dict,
    with_torch: bool = False,
) -> list[dict]:
    """Time every implementation on one (queries, bank) pair for k = 1 and 9."""
    import faiss
    from threadpoolctl import threadpool_limits

    from structcore import _core

    n_q, dim = queries.shape
    n_b = bank.shape[0]
    flops = 2.0 * n_q * n_b * dim
    bank16 = bank.astype(np.float16)
    bank16u = bank16.view(np.uint16)
    index = faiss.IndexFlatL2(dim)
    index.add(bank)
    default_is_bf16 = "+bf16" in _core.build_info()
    shape = f"{label}: {n_q}x{dim} vs {n_b}x{dim}"

    rows: list[dict] = []
    for k in (1, 9):

        def faiss_run(t: int, k: int = k) -> tuple:
            faiss.omp_set_num_threads(t)
            d2, i = index.search(queries, k)
            return np.sqrt(np.maximum(d2, 0)), i

        def blas_run(k: int = k) -> tuple:
            with threadpool_limits(1):
                return numpy_blas_knn(queries, bank, k)

        # "f32 path": the float32 norms-trick kernels (private level, clamped to the CPU);
        # "default": structcore.kernels.knn as users call it (the bf16 candidate pass with
        # exact re-ranking on AVX-512 BF16 CPUs, else the f32 path).
        impls: dict[str, tuple[int, Callable[[], tuple]]] = {
            "structcore f32 path": (1, lambda k=k: _core.knn(queries, bank, k, 1, "avx512")),
            "structcore f32 path 2T": (2, lambda k=k: _core.knn(queries, bank, k, 2, "avx512")),
            "structcore f32 path, f16 bank": (
                1,
                lambda k=k: _core.knn_f16(queries, bank16u, k, 1, "avx512"),
            ),
            "structcore f32 path, f16 b. 2T": (
                2,
                lambda k=k: _core.knn_f16(queries, bank16u, k, 2, "avx512"),
            ),
            "structcore default": (1, lambda k=k: knn(queries, bank, k, threads=1)),
            "structcore default 2T": (2, lambda k=k: knn(queries, bank, k, threads=2)),
            "structcore default, f16 bank": (1, lambda k=k: knn(queries, bank16, k, threads=1)),
            "structcore f32 path, avx2 level": (
                1,
                lambda k=k: _core.knn(queries, bank, k, 1, "avx2"),
            ),
            "faiss IndexFlatL2": (1, lambda: faiss_run(1)),
            "faiss IndexFlatL2 2T": (2, lambda: faiss_run(2)),
            "numpy BLAS (norms trick)": (1, blas_run),
        }
        if with_torch:
            import torch

            torch.set_num_threads(1)  # single-thread rows, as everything else here
            qb = torch.from_numpy(queries).to(torch.bfloat16)
            bb = torch.from_numpy(bank).to(torch.bfloat16)

            def torch_mm(qb=qb, bb=bb) -> tuple:
                return torch.matmul(qb, bb.T), None

            def torch_knn(k: int = k) -> tuple:
                return torch_bf16_knn(queries, bank, k)

            impls["torch bf16@bf16.T only"] = (1, torch_mm)
            impls["torch bf16 cand. + exact"] = (1, torch_knn)
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

        sc_i = outputs["structcore f32 path"][1]
        med = {name: statistics.median(ts) for name, ts in times.items()}
        best = {name: min(ts) for name, ts in times.items()}
        med["reference (scaled)"] = ref_time
        best["reference (scaled)"] = ref_time
        for name, t in med.items():
            threads = impls[name][0] if name in impls else 1
            faiss_same = med["faiss IndexFlatL2 2T" if threads == 2 else "faiss IndexFlatL2"]
            row = {
                "shape": shape,
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
            if name in outputs and outputs[name][1] is None:
                row["indices_equal_structcore_f32"] = float("nan")
            elif name in outputs:
                row["indices_equal_structcore_f32"] = float(np.mean(outputs[name][1] == sc_i))
            else:
                row["indices_equal_structcore_f32"] = float(np.mean(ref_i == sc_i[:ref_q]))
            if name == "reference (scaled)":
                # exact oracle vs the default path on the subset
                row["indices_equal_default"] = float(
                    np.mean(ref_i == outputs["structcore default"][1][:ref_q])
                )
            rows.append(row)
        ratios = [
            (
                "structcore f32 path: 2 threads / 1 thread",
                "structcore f32 path",
                "structcore f32 path 2T",
            ),
            (
                "structcore default: 2 threads / 1 thread",
                "structcore default",
                "structcore default 2T",
            ),
            (
                "structcore f32 path: f16 bank / f32 bank (1 thread)",
                "structcore f32 path",
                "structcore f32 path, f16 bank",
            ),
            (
                "structcore default: f16 bank / f32 bank (1 thread)",
                "structcore default",
                "structcore default, f16 bank",
            ),
            (
                "structcore default / f32 path (1 thread, CPU time)",
                "structcore f32 path",
                "structcore default",
            ),
            (
                "structcore f32 path / faiss (1 thread, CPU time)",
                "faiss IndexFlatL2",
                "structcore f32 path",
            ),
            (
                "structcore default / faiss (1 thread, CPU time)",
                "faiss IndexFlatL2",
                "structcore default",
            ),
            (
                "structcore f32 avx2 level / faiss (1 thread, CPU time)",
                "faiss IndexFlatL2",
                "structcore f32 path, avx2 level",
            ),
        ]
        if with_torch:
            ratios.append(
                (
                    "structcore default / torch bf16 cand. + exact (1 thread, CPU time)",
                    "torch bf16 cand. + exact",
                    "structcore default",
                )
            )
        for label_r, slow, fast in ratios:
            use_cpu = "CPU time" in label_r
            a = statistics.median(cpu[slow]) if use_cpu else med[slow]
            b = statistics.median(cpu[fast]) if use_cpu else med[fast]
            rows.append({"shape": shape, "k": k, "implementation": label_r, "speedup": a / b})
        rows.append(
            {
                "shape": shape,
                "k": k,
                "default_is_bf16_candidates": default_is_bf16,
                "implementation": "default: indices identical to the f32 path",
                "fraction": float(np.mean(outputs["structcore default"][1] == sc_i)),
            }
        )
    return rows


def print_rows(rows: list[dict], rounds: int) -> None:
    header = (
        f"{'k':>2} {'implementation':<31} {'thr':>3} {'median s':>9} {'GFLOP/s':>8} "
        f"{'%peak':>6} {'x faiss':>8} {'x ref':>8} {'=idx':>6} {'best GF/s':>9} {'cpu GF/s':>8}"
    )
    shape = None
    for r in rows:
        if r["shape"] != shape:
            shape = r["shape"]
            print(f"\n{shape}; {rounds} rounds, medians")
            print(header)
            print("-" * len(header))
        if "speedup" in r:
            print(f"{r['k']:>2} {r['implementation']:<60} {r['speedup']:.2f}x")
            continue
        if "fraction" in r:
            print(f"{r['k']:>2} {r['implementation']:<60} {r['fraction']:.4f}")
            continue
        cpu_s = r["cpu_s"]
        flops = r["gflops"] * r["median_s"]
        cpu_gf = f"{flops / cpu_s:.1f}" if r["threads"] == 1 and cpu_s else "-"
        print(
            f"{r['k']:>2} {r['implementation']:<31} {r['threads']:>3} {r['median_s']:>9.4f} "
            f"{r['gflops']:>8.1f} {r['pct_sgemm_peak']:>6.1f} "
            f"{r['speed_vs_faiss_same_threads']:>8.2f} {r['speed_vs_reference']:>8.1f} "
            f"{r['indices_equal_structcore_f32']:>6.3f} {r['best_gflops']:>9.1f} {cpu_gf:>8}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shapes, fewer rounds")
    ap.add_argument("--rounds", type=int, default=None, help="timing rounds (median)")
    ap.add_argument(
        "--real",
        action="store_true",
        help="also real PatchCore features (MobileNetV2, and WideResNet-50-2 with random "
        "weights; MVTec AD bottle from ../shared)",
    )
    ap.add_argument(
        "--torch",
        action="store_true",
        help="also time the oneDNN route: torch bf16 matmul alone and as a full candidate pass",
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "knn.json")
    args = ap.parse_args()

    import faiss

    if args.quick:
        n_q, n_b, dim, rounds, ref_q, peak_n = 196, 4096, 1024, 3, 4, 1024
    else:
        n_q, n_b, dim, rounds, ref_q, peak_n = 784, 16384, 1024, 5, 8, 2048
    rounds = args.rounds or rounds

    from threadpoolctl import threadpool_info

    from structcore import _core

    print(structcore.build_info())
    info = _core.knn_info(1)
    print(
        f"CPU: {cpu_model()}; {info['cpu']['vendor']} family {info['cpu']['family']} model "
        f"{info['cpu']['model']}; flags: {' '.join(cpu_flags())}; load {load_avg()}"
    )
    for kk in (1, 9):
        c = _core.knn_info(kk)
        print(
            f"knn path chosen (k={kk}): candidates {c['candidates']}, tile {c['tile']}, "
            f"float32 level {c['f32']} kc {c['kc']}; why: {c['reason']}"
        )
    faiss_blas = [
        f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')}"
        for i in threadpool_info()
        if "faiss" in (i.get("filepath") or "")
    ]
    print(
        f"faiss {faiss.__version__}: compile options '{faiss.get_compile_options().strip()}', "
        f"BLAS {faiss_blas}"
    )
    peak = sgemm_peak(peak_n, 5 if args.quick else 7)
    print(
        f"single-thread SGEMM peak (numpy/OpenBLAS {peak['blas']}): "
        f"{peak['gflops']:.1f} GFLOP/s (median), {peak['best_gflops']:.1f} (best)"
    )
    peak_avx2 = sgemm_peak(peak_n, 5 if args.quick else 7, coretype="Haswell")
    print(
        f"single-thread AVX2 SGEMM peak (OPENBLAS_CORETYPE=Haswell): "
        f"{peak_avx2['gflops']:.1f} GFLOP/s (median), {peak_avx2['best_gflops']:.1f} (best)"
    )

    rng = np.random.default_rng(0)
    queries = rng.standard_normal((n_q, dim), dtype=np.float32)
    bank = rng.standard_normal((n_b, dim), dtype=np.float32)
    rows = run_dataset("gaussian", queries, bank, rounds, ref_q, peak, args.torch)
    if args.real:
        rq, rb = patchcore_features(n_b)
        rows += run_dataset(
            "MobileNetV2 bottle features", rq[:n_q], rb, rounds, ref_q, peak, args.torch
        )
        rq, rb = wrn_features(n_b, dim)
        rows += run_dataset(
            "WideResNet-50-2 (random init) bottle features",
            rq[:n_q],
            rb,
            rounds,
            ref_q,
            peak,
            args.torch,
        )
    print_rows(rows, rounds)
    for r in rows:
        if r.get("implementation") == "structcore f32 path, avx2 level":
            # process CPU time (1 thread): the figure least disturbed by other processes
            gf = r["gflops"] * r["median_s"] / r["cpu_s"]
            print(
                f"{r['shape']}, k={r['k']}: f32 path at the AVX2 level {gf:.1f} GFLOP/s "
                f"(CPU time) = {100 * gf / peak_avx2['gflops']:.0f} % of the AVX2 sgemm peak "
                f"(OpenBLAS Haswell kernel, CPU time)"
            )
    print(f"load average at the end: {load_avg()}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "bench": "knn",
        "build_info": structcore.build_info(),
        "machine": {
            "cpu": cpu_model(),
            "cpu_flags": cpu_flags(),
            "load_avg_end": load_avg(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "faiss": faiss.__version__,
        },
        "quick": args.quick,
        "rounds": rounds,
        "sgemm_peak": peak,
        "sgemm_peak_avx2": peak_avx2,
        "knn_info": {kk: _core.knn_info(kk) for kk in (1, 9)},
        "faiss_compile_options": faiss.get_compile_options(),
        "results": rows,
    }
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
