"""The backbone alone: eager float32 (batch norms folded, the default) vs unfolded, bfloat16
autocast, and ``torch.compile``, side by side in one run.

Usage::

    TORCH_HOME=../shared/weights PYTHONPATH=python python bench/bench_backbone.py
    PYTHONPATH=python python bench/bench_backbone.py --backbones wide_resnet50_2 --threads 1

What is timed: :class:`structcore.features.FeatureExtractor` on one random batch
(``--batch`` images of ``--size`` px, the default layers, ``dim`` = the channel count, so no
channel pooling), ``--repeats`` calls after a warm-up call, median ms per image; random
initialisation (the work does not depend on the weights' values). Rows:

* ``folded``: the library's path (channels-last, batch norms folded into the convolutions);
* ``unfolded``: the same network with its batch norms as separate layers;
* ``bf16``: ``precision="bfloat16"`` (autocast; AMX or AVX-512 BF16 where present);
* ``compiled`` (``--compile``): the folded extractor's stages and patch aggregation under
  ``torch.compile`` (inductor, default mode); its first call (the compilation) is reported
  separately, since every new process (a Ray actor, a CLI call) would pay it.

Also printed: the largest difference of each row's features to ``folded`` relative to the
largest feature. Prints a table and writes ``bench/results/backbone.json``. Nothing here
asserts.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import cpu_flags, cpu_model, load_avg, write_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "backbone.json"


def _extractor(backbone: str, precision: str, fold: bool) -> Any:
    from structcore import features

    with features._batchnorm_folding(fold):
        return features.FeatureExtractor(
            backbone, weights=None, dim=1_000_000, precision=precision, seed=0
        )


def _compiled(fx: Any) -> Any:
    import torch

    from structcore.features import aggregate_patches

    stages = list(fx._stages)
    layers = set(fx.layers)

    def run(x: Any) -> Any:
        maps = []
        for name, stage in stages:
            x = stage(x)
            if name in layers:
                maps.append(x)
        return aggregate_patches(maps)

    fn = torch.compile(run)

    def call(batch: Any) -> np.ndarray:
        with torch.inference_mode():
            x = batch.contiguous(memory_format=torch.channels_last)
            f = fn(x)
            return f.permute(0, 2, 3, 1).contiguous().numpy()

    return call


def _time(call: Any, x: Any, repeats: int) -> tuple[float, float, np.ndarray]:
    """(first-call s, median s per call after it, output of the last call)."""
    t0 = time.perf_counter()
    out = call(x)
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = call(x)
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times), np.asarray(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbones", default="mobilenet_v2,wide_resnet50_2")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="also a torch.compile row")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    flags = cpu_flags()
    print(
        f"CPU: {cpu_model()}; bf16/amx flags: "
        f"{sorted(f for f in flags if 'bf16' in f or 'amx' in f)}; load {load_avg()}; "
        f"{args.threads} threads, batch {args.batch} x {args.size} px, torch {torch.__version__}",
        flush=True,
    )
    x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    results: dict[str, Any] = {}
    for backbone in [b for b in args.backbones.split(",") if b]:
        rows: dict[str, Any] = {}
        calls = {
            "folded": _extractor(backbone, "float32", True),
            "unfolded": _extractor(backbone, "float32", False),
            "bf16": _extractor(backbone, "bfloat16", True),
        }
        if args.compile:
            calls["compiled"] = _compiled(calls["folded"])
        ref = None
        for name, call in calls.items():
            first, per_call, out = _time(call, x, args.repeats)
            if ref is None:
                ref = out
            diff = float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30))
            rows[name] = {
                "first_call_s": first,
                "ms_per_image": 1000 * per_call / args.batch,
                "max_rel_diff_to_folded": diff,
            }
        base = rows["folded"]["ms_per_image"]
        print(f"\n{backbone}: ms per image (median of {args.repeats}), first call s")
        print("| row | ms/image | x folded | first call s | max rel diff |\n|---|---|---|---|---|")
        for name, r in rows.items():
            print(
                f"| {name} | {r['ms_per_image']:.1f} | {base / r['ms_per_image']:.2f} | "
                f"{r['first_call_s']:.1f} | {r['max_rel_diff_to_folded']:.1e} |",
                flush=True,
            )
        results[backbone] = rows
    write_results(args.out, args, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
