"""Benchmark of structcore.kernels.anomaly_map (METHOD.md §2, issue 3 §4).

One run, side by side (round-robin over implementations, median of repeats):

* one 28 x 28 patch grid -> 224 x 224 map, sigma 4, single thread: structcore (operators
  cached, as in a detector; and cold, a new sigma every call), the NumPy reference,
  torch interpolate + scipy gaussian_filter (what it reproduces), and OpenCV
  ``cv2.resize(INTER_LINEAR)`` + ``cv2.GaussianBlur`` with the matching kernel (33 x 33,
  sigma 4, BORDER_REFLECT = scipy's 'reflect');
* a batch of 256 grids with 1 and 2 threads (allocation of the 51 MB output included),
  raced against a write-ceiling probe: the same call on 1 x 1 grids with sigma 0, which
  writes the same 51 MB through the same (non-temporal) store path with almost no
  arithmetic. The probe's 2-thread time bounds what any 2-thread batch can reach on this
  machine's memory system, so the run reports the best speedup the bandwidth allows
  (1-thread batch time / 2-thread probe time) beside the speedup measured.

Usage: ``python bench/bench_anomaly_map.py [--quick]``; writes bench/results/anomaly_map.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np

import structcore
from _common import cpu_pressure, race
from structcore import kernels, reference

RESULTS = Path(__file__).resolve().parent / "results" / "anomaly_map.json"


def torch_scipy(scores: np.ndarray, size: int, sigma: float) -> np.ndarray:
    import torch
    from scipy import ndimage

    up = torch.nn.functional.interpolate(
        torch.from_numpy(scores[:, None]), size=(size, size), mode="bilinear", align_corners=False
    )[:, 0].numpy()
    return ndimage.gaussian_filter(up, sigma=(0.0, sigma, sigma), mode="reflect", truncate=4.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    args = parser.parse_args()
    repeats = 5 if args.quick else 15

    import cv2
    import torch

    build_info = structcore.build_info()  # before torch changes the OpenMP default
    load_before = os.getloadavg()
    pressure_before = cpu_pressure()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    h, size, sigma = 28, 224, 4.0
    ksize = 2 * int(4.0 * sigma + 0.5) + 1  # scipy's truncate=4 radius -> 33 taps
    grid = rng.random((h, h), dtype=np.float32)
    batch1 = grid[None]

    def cv2_pipeline() -> np.ndarray:
        up = cv2.resize(grid, (size, size), interpolation=cv2.INTER_LINEAR)
        return cv2.GaussianBlur(up, (ksize, ksize), sigma, borderType=cv2.BORDER_REFLECT)

    cold_sigma = [sigma]

    def structcore_cold() -> np.ndarray:  # a new sigma each call: operators rebuilt
        cold_sigma[0] = np.nextafter(cold_sigma[0], 5.0)
        return kernels.anomaly_map(grid, size, sigma=cold_sigma[0], threads=1)

    single = {
        "structcore": lambda: kernels.anomaly_map(grid, size, sigma=sigma, threads=1),
        "structcore (cold operators)": structcore_cold,
        "opencv resize+GaussianBlur": cv2_pipeline,
        "torch interpolate + scipy": lambda: torch_scipy(batch1, size, sigma),
        "numpy reference": lambda: reference.anomaly_map(grid, size, sigma=sigma),
    }
    # Fast ones 100 calls per sample, slow ones 5 (each group raced round-robin).
    t_single: dict[str, float] = {}
    t_single.update(race({k: (single[k], 100) for k in list(single)[:3]}, repeats))
    t_single.update(race({k: (single[k], 5) for k in list(single)[3:]}, max(3, repeats // 3)))

    ours = kernels.anomaly_map(grid, size, sigma=sigma, threads=1)
    diff_torch = float(np.max(np.abs(ours - torch_scipy(batch1, size, sigma)[0])))
    diff_cv2 = float(np.max(np.abs(ours - cv2_pipeline())))

    n_batch = 256
    batch = rng.random((n_batch, h, h), dtype=np.float32)
    probe = rng.random((n_batch, 1, 1), dtype=np.float32)
    batch_fns: dict[str, Callable[[], object]] = {}
    for t in (1, 2):
        batch_fns[f"structcore threads={t}"] = lambda t=t: kernels.anomaly_map(
            batch, size, sigma=sigma, threads=t
        )
    for t in (1, 2):
        batch_fns[f"write-ceiling probe threads={t}"] = lambda t=t: kernels.anomaly_map(
            probe, size, sigma=0.0, threads=t
        )
    number = 1 if args.quick else 2
    t_batch = race({k: (fn, number) for k, fn in batch_fns.items()}, repeats)

    base = t_single["structcore"]
    rows = []
    print(f"anomaly_map {h}x{h} -> {size}x{size}, sigma {sigma}, single thread")
    print(f"{'implementation':34s} {'median us':>10s} {'maps/s':>10s} {'x structcore':>13s}")
    for name, t in t_single.items():
        rows.append(
            {
                "case": "single",
                "shape": [1, h, h],
                "size": [size, size],
                "sigma": sigma,
                "implementation": name,
                "threads": 1,
                "median_s": t,
                "maps_per_s": 1.0 / t,
                "ratio_to_structcore": t / base,
            }
        )
        print(f"{name:34s} {t * 1e6:10.1f} {1.0 / t:10.0f} {t / base:13.2f}")
    print(
        f"max |structcore - torch+scipy| = {diff_torch:.3g}; "
        f"max |structcore - opencv| = {diff_cv2:.3g} (OpenCV: float resize coefficients "
        "and its own blur rounding; borders both half-sample symmetric)"
    )
    mib = n_batch * size * size * 4 / 2**20
    print(f"\nbatch of {n_batch} maps (output {mib:.0f} MiB allocated per call)")
    t1 = t_batch["structcore threads=1"]
    out_bytes = n_batch * size * size * 4
    for name, t in t_batch.items():
        rows.append(
            {
                "case": "batch",
                "shape": [n_batch, h, h],
                "size": [size, size],
                "sigma": sigma,
                "implementation": name,
                "threads": int(name[-1]),
                "median_s": t,
                "maps_per_s": n_batch / t,
                "write_gb_per_s": out_bytes / t / 1e9,
                "speedup_vs_1_thread": t1 / t,
            }
        )
        print(
            f"{name:34s} {t * 1e3:9.2f} ms {n_batch / t:10.0f} maps/s "
            f"{out_bytes / t / 1e9:6.1f} GB/s written  x{t1 / t:.2f} of structcore threads=1"
        )
    t2 = t_batch["structcore threads=2"]
    probe2 = t_batch["write-ceiling probe threads=2"]
    print(
        f"2-thread speedup {t1 / t2:.2f}; the write ceiling allows at most {t1 / probe2:.2f} "
        f"(2-thread batch at {probe2 / t2:.0%} of the probe's write rate)"
    )

    ratios = {
        "opencv_over_structcore": t_single["opencv resize+GaussianBlur"] / base,
        "torch_scipy_over_structcore": t_single["torch interpolate + scipy"] / base,
        "reference_over_structcore": t_single["numpy reference"] / base,
        "batch256_speedup_2_threads": t1 / t2,
        "batch256_speedup_bound_by_write_ceiling": t1 / probe2,
        "batch256_fraction_of_write_ceiling_2_threads": probe2 / t2,
    }
    print("\nratios:", json.dumps({k: round(v, 2) for k, v in ratios.items()}))
    load_after = os.getloadavg()
    pressure_after = cpu_pressure()
    print(
        f"load average (1 min) before/after: {load_before[0]:.2f} / {load_after[0]:.2f} on "
        f"{os.cpu_count()} CPUs; CPU pressure (PSI some avg10, %): {pressure_before} / "
        f"{pressure_after}"
    )
    if pressure_after is not None and pressure_after > 50:
        print(
            "warning: the CPUs are oversubscribed; thread scaling measured now says little "
            "(and libgomp's spin-waiting makes it worse: try OMP_WAIT_POLICY=passive)"
        )
    print("build_info:", build_info)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "anomaly_map",
                "quick": args.quick,
                "build_info": build_info,
                "cpu_count": os.cpu_count(),
                "omp_env": {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "GOMP_"))},
                "loadavg_before_after": [load_before[0], load_after[0]],
                "cpu_pressure_some_avg10_before_after": [pressure_before, pressure_after],
                "machine": platform.platform(),
                "processor": platform.processor(),
                "opencv": cv2.__version__,
                "torch": torch.__version__,
                "max_abs_diff_torch_scipy": diff_torch,
                "max_abs_diff_opencv": diff_cv2,
                "ratios": ratios,
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
