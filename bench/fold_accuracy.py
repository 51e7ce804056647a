"""Does folding the backbone's batch norms change accuracy on real data? Folded vs unfolded.

Usage::

    TORCH_HOME=../shared/weights PYTHONPATH=python python bench/fold_accuracy.py

Needs ``../shared/datasets`` (MVTec AD *bottle*, Magnetic Tile) and torchvision's
MobileNetV2 weights (``TORCH_HOME``). For each data set (bottle: the official split; ``mtd``:
Magnetic Tile with the accuracy harness's split, ``load_magnetic_tile(test_fraction=0.2,
seed=0, max_train=--mtd-train)``), the library's default detector with MobileNetV2 is fitted
and evaluated (:func:`structcore.evaluation.evaluate`) twice: with the batch norms folded
into the convolutions (the library's path) and with them left as separate layers
(``structcore.features._batchnorm_folding(False)``). Reported side by side: image AUROC of
``max`` and ``paper/l2/auto/train``, pixel AUROC, the largest difference of the image scores
and the number of test images whose decision differs. Writes
``bench/results/fold_accuracy.json``. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import cpu_model, load_avg, write_results

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=SHARED / "datasets")
    ap.add_argument("--mtd-train", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fold_accuracy.json")
    args = ap.parse_args()
    bottle, mtd = args.data / "mvtec_ad" / "bottle", args.data / "magnetic_tile"
    if not (bottle.is_dir() and mtd.is_dir()):
        print(f"needs MVTec AD bottle and Magnetic Tile under {args.data}", file=sys.stderr)
        return 1
    os.environ.setdefault("TORCH_HOME", str(SHARED / "weights"))
    from structcore import Detector, features
    from structcore.datasets import load_magnetic_tile, load_mvtec
    from structcore.evaluation import evaluate

    sets = {
        "bottle": load_mvtec(bottle),
        "mtd": load_magnetic_tile(mtd, test_fraction=0.2, seed=0, max_train=args.mtd_train),
    }
    print(f"CPU: {cpu_model()}; load {load_avg()}; {args.threads} threads", flush=True)
    out: dict[str, Any] = {}
    print("| set | backbone norms | max | paper/l2/auto/train | pixel AUROC | fit+eval s |")
    print("|---|---|---|---|---|---|")
    for name, split in sets.items():
        res = {}
        for folded in (True, False):
            with features._batchnorm_folding(folded):
                det = Detector("mobilenet_v2", threads=args.threads, progress=False)
                t0 = time.perf_counter()
                r = evaluate(det, split)
                secs = time.perf_counter() - t0
            auroc = r.metrics["image_auroc"]
            pixel = r.metrics.get("pixel_auroc")
            label = "folded" if folded else "unfolded"
            res[label] = {
                "image_auroc": auroc,
                "pixel_auroc": pixel,
                "seconds": secs,
                "scores": {k: v.tolist() for k, v in r.scores.items()},
                "is_anomalous": r.is_anomalous.tolist(),
            }
            print(
                f"| {name} ({len(split.train)} train, {len(r.labels)} test) | {label} | "
                f"{auroc['max']:.4f} | {auroc['paper/l2/auto/train']:.4f} | "
                f"{pixel if pixel is None else f'{pixel:.4f}'} | {secs:.0f} |",
                flush=True,
            )
        a, b = res["folded"], res["unfolded"]
        diff = {
            k: float(np.max(np.abs(np.subtract(a["scores"][k], b["scores"][k]))))
            for k in ("max", "paper/l2/auto/train")
        }
        flips = int(np.sum(np.asarray(a["is_anomalous"]) != np.asarray(b["is_anomalous"])))
        print(f"  {name}: largest score difference {diff}; decisions that differ: {flips}")
        out[name] = {**res, "max_score_diff": diff, "decision_flips": flips}
    write_results(args.out, args, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
