"""Harness ``--crossfit-bank masked`` vs the product's default ``calibration="synthetic"``.

For each named data set of ``bench/accuracy.py`` (same loaders, train caps and seeds), reads
the harness's cached masked maps and synthetic-defect maps (run ``bench/accuracy.py
--crossfit-bank masked`` first), scores ``learned/cp+perlin``, then fits
``Detector(**MapConfig, calibration="synthetic")`` (default ``crossfit_bank="masked"``) on the
train paths and predicts the test paths. Prints the largest differences of the cross-fitted
max scores, the synthetic-defect max scores, the weights and the test scores, and both AUROCs.

    TORCH_HOME=../shared/weights PYTHONPATH=python python bench/synthetic_parity_masked.py \\
        --datasets bottle,deeppcb --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))
sys.path.insert(0, str(HERE))

from accuracy import _datasets  # noqa: E402
from structcore import Detector  # noqa: E402
from structcore.research import ablation  # noqa: E402
from structcore.research import variants as scores  # noqa: E402
from structcore.research.synthetic_defects import load_or_compute_synthetic_maps  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    ap.add_argument("--cache", type=Path, default=HERE.parent / "runs" / "accuracy")
    ap.add_argument("--datasets", default="bottle,deeppcb")
    ap.add_argument("--backbone", default="mobilenet_v2")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, args.threads))
    wanted = args.datasets.split(",")
    data = _datasets(args.data, 100, 100, wanted, args.cache, 100)
    cfg = ablation.MapConfig(args.backbone)
    for name in wanted:
        ds = data[name]
        test = [s.image for s in ds.test]
        ms = ablation.load_or_compute_split_maps(
            name, ds, cfg, args.cache, compute=False, crossfit_bank="masked"
        )
        syn = load_or_compute_synthetic_maps(
            name, ds.train, test, cfg, args.cache, compute=False, crossfit_bank="masked"
        )
        models: dict = {}
        got = scores.score_variants(
            ms, names=["learned/cp+perlin"], synthetic=syn, models=models, threads=args.threads
        )["learned/cp+perlin"]
        t0 = time.perf_counter()
        det = Detector(**asdict(cfg), calibration="synthetic", threads=args.threads)
        det.fit([str(p) for p in ds.train])
        pred = det.predict([str(p) for p in test])
        dt = time.perf_counter() - t0
        prod = np.isin(syn.maker, ["cutpaste", "perlin"])
        m = models["learned/cp+perlin"]
        y = ms.labels
        print(
            f"{name}: fit+predict {dt:.0f} s; |d| cross-fit max "
            f"{np.abs(ms.cal_max['crossfit'] - det.train_max_['crossfit']).max():.2e}, "
            f"synthetic max {np.abs(syn.max[prod] - det.synthetic_max_).max():.2e}, "
            f"sources equal {np.array_equal(syn.source[prod], det.synthetic_sources_)}, "
            f"test max {np.abs(ms.test_max - pred.score_max).max():.2e}, "
            f"weights {np.abs(m.a - det.weights_).max():.2e} (harness alpha {m.alpha:g}, "
            f"a {np.round(m.a, 5).tolist()}), test score {np.abs(got - pred.score).max():.2e}; "
            f"AUROC harness {ablation.auroc(y, got):.4f}, "
            f"product {ablation.auroc(y, pred.score):.4f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
