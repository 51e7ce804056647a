"""Greedy coreset: full passes (the previous algorithm) vs triangle-inequality pruning (auto).

Usage::

    TORCH_HOME=../shared/weights PYTHONPATH=python python bench/bench_coreset_pruning.py
    ... --images 100 --repeats 3 --dataset ../shared/datasets/mvtec_ad/bottle/train/good

Two inputs of the same shape: real PatchCore features (MobileNetV2 patches of the first
``--images`` MVTec AD bottle train images, 28 x 28 patches each, cached in bench/results/) and
i.i.d. Gaussian features. Both run through the public pipeline's preparation (seeded 128-d JL
projection; 128-d features skip it and stay float32, scaled) and then ``_core.coreset_ex``
single-threaded with mode 1 (full passes) and mode 0 (auto: pruned), side by side in one run,
medians of ``--repeats``; the indices of the two modes (and of ``_core.coreset``) are
compared. Prints a table and writes ``bench/results/coreset_pruning.json``. Never asserts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

import structcore
from structcore import _core
from structcore.projection import prepare_points

RESULTS = Path(__file__).resolve().parent / "results"


def real_features(dataset: Path, n_images: int) -> np.ndarray:
    """MobileNetV2 patch features of the first ``n_images`` images: (n_patches, 128) float32."""
    cache = RESULTS / f"pruning_features_{n_images}.npy"
    if cache.exists():
        return np.load(cache)
    from structcore.features import FeatureExtractor
    from structcore.images import preprocess

    files = sorted(dataset.glob("*.png"))[:n_images]
    fx = FeatureExtractor("mobilenet_v2", dim=128)
    out = []
    for b in range(0, len(files), 16):
        out.append(fx(preprocess([str(f) for f in files[b : b + 16]], 256, 224)))
    feats = np.concatenate(out).reshape(-1, out[0].shape[-1]).astype(np.float32)
    RESULTS.mkdir(exist_ok=True)
    np.save(cache, feats)
    return feats


def time_modes(feats: np.ndarray, n: int, repeats: int) -> dict[str, Any]:
    """Median seconds of mode 1 (full) and mode 0 (auto) on the prepared points."""
    prep = prepare_points(feats, 128, 0)
    pts = prep.points  # float16 after a projection, float32 (scaled) when dim <= 128
    run = _core.coreset if pts.dtype == np.float32 else _core.coreset_f16
    run_ex = _core.coreset_ex if pts.dtype == np.float32 else _core.coreset_f16_ex
    if pts.dtype == np.float16:
        pts = pts.view(np.uint16)
    times: dict[int, list[float]] = {1: [], 0: []}
    idx: dict[int | str, np.ndarray] = {}
    stats: dict[int, dict[str, int]] = {}
    for _ in range(repeats):
        for mode in (1, 0):
            t0 = time.perf_counter()
            idx[mode], stats[mode] = run_ex(pts, n, prep.start, 1, mode)
            times[mode].append(time.perf_counter() - t0)
    idx["public"] = run(pts, n, prep.start, 1)
    full, auto = statistics.median(times[1]), statistics.median(times[0])
    return {
        "n_points": int(feats.shape[0]),
        "n": n,
        "full_s": full,
        "pruned_s": auto,
        "speedup": full / auto,
        "dtype": str(prep.points.dtype),
        "identical": bool(np.array_equal(idx[1], idx[0]) and np.array_equal(idx[1], idx["public"])),
        "pruned_stats": stats[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--dataset", type=Path, default=Path("../shared/datasets/mvtec_ad/bottle/train/good")
    )
    args = ap.parse_args()
    real = real_features(args.dataset, args.images)
    gauss = np.random.default_rng(0).standard_normal(real.shape).astype(np.float32)
    rows = []
    print(f"{'data':<10}{'n_points':>9}{'n':>7}{'full s':>9}{'pruned s':>10}{'speedup':>9}  same")
    for name, feats in (("mvtec", real), ("gaussian", gauss)):
        for frac in (0.01, 0.1):
            n = max(1, round(frac * feats.shape[0]))
            r = {"data": name, "frac": frac, **time_modes(feats, n, args.repeats)}
            rows.append(r)
            print(
                f"{name:<10}{r['n_points']:>9}{n:>7}{r['full_s']:>9.2f}{r['pruned_s']:>10.2f}"
                f"{r['speedup']:>9.2f}  {r['identical']}"
            )
    RESULTS.mkdir(exist_ok=True)
    out = {"build_info": structcore.build_info(), "repeats": args.repeats, "rows": rows}
    (RESULTS / "coreset_pruning.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
