"""Fit at real train sizes: cross-fit banks by fresh coresets vs by masking the final coreset.

Issue 14 §6. Features are extracted once (not timed in the fit figures); then, side by side
in one run on the same features:

* one coreset selection of all train patches (``MemoryBank.build``: the unit of cost);
* ``Detector.fit_features`` with ``crossfit_bank="coreset"`` (a fresh coreset per fold) and
  with ``crossfit_bank="masked"`` (the final coreset minus each fold's own rows), at the
  library's defaults otherwise (10 % coreset, 5 folds, both calibration modes);
* what the choice changes downstream: the decision threshold and its false-positive rate on
  the good test images (and recall on the defective ones), and the image AUROC of every score
  of the variant grid (the final bank, hence the maps, are the same in both fits).

    TORCH_HOME=../shared/weights PYTHONPATH=python python bench/bench_fit.py \\
        --dataset mtd --train 571
    PYTHONPATH=python python bench/bench_fit.py --dataset bottle          # all 209 train images

No assertions: figures go to stdout and ``bench/results/fit_<dataset>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))
sys.path.insert(0, str(HERE))

from _common import cpu_model, load_avg  # noqa: E402


def _dataset(name: str, data: Path, n_train: int | None) -> object:
    from structcore.datasets import load_magnetic_tile, load_mvtec

    if name == "bottle":
        return load_mvtec(data / "mvtec_ad" / "bottle", max_train=n_train, seed=0)
    if name == "mtd":
        return load_magnetic_tile(
            data / "magnetic_tile", test_fraction=0.2, seed=0, max_train=n_train
        )
    if name == "deeppcb":
        return load_mvtec(data / "deeppcb", max_train=n_train, seed=0)
    raise SystemExit(f"unknown dataset {name!r}")


def _write(
    args: argparse.Namespace,
    fits: dict[str, dict[str, object]],
    n_train: int,
    n_test: int,
    t_feat: float,
    t_coreset: float,
) -> None:
    import structcore

    out = args.out or HERE / "results" / f"fit_{args.dataset}_{n_train}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "argv": sys.argv,
        "cpu": cpu_model(),
        "build": structcore.build_info(),
        "n_train": n_train,
        "n_test": n_test,
        "features_s": t_feat,
        "one_coreset_s": t_coreset,
        "fits": fits,
        "load_end": load_avg(),
    }
    out.write_text(json.dumps(doc, indent=1))
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    ap.add_argument("--dataset", default="bottle", choices=("bottle", "mtd", "deeppcb"))
    ap.add_argument("--train", type=int, default=None, help="train images (default: all)")
    ap.add_argument("--backbone", default="mobilenet_v2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--modes", default="coreset,masked", help="crossfit_bank values to fit (comma list)"
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    os.environ.setdefault("TORCH_HOME", str(HERE.parent.parent / "shared" / "weights"))
    import torch
    from sklearn.metrics import roc_auc_score

    import structcore
    from structcore import Detector
    from structcore.memory_bank import MemoryBank

    torch.set_num_threads(args.threads)
    ds = _dataset(args.dataset, args.data, args.train)
    train = list(ds.train)
    test = [s.image for s in ds.test]
    labels = np.array([s.label for s in ds.test], dtype=bool)
    print(
        f"# bench_fit: {args.dataset}, {len(train)} train, {len(test)} test "
        f"({int(labels.sum())} defective), {args.backbone}, {args.threads} threads"
    )
    print(f"# CPU: {cpu_model()}; load {load_avg()}; {structcore.build_info()}")

    base = Detector(args.backbone, threads=args.threads)
    t0 = time.perf_counter()
    f_train = base.features(train)
    f_test = base.features(test)
    t_feat = time.perf_counter() - t0
    print(f"features: {f_train.shape} train + {f_test.shape[0]} test in {t_feat:.1f} s")

    t0 = time.perf_counter()
    one = MemoryBank.build(f_train, 0.1, projection_dim=128, seed=0, threads=args.threads)
    t_coreset = time.perf_counter() - t0
    print(
        f"one coreset: {len(one)} of {f_train.shape[0] * f_train.shape[1] * f_train.shape[2]}"
        f" patches in {t_coreset:.1f} s"
    )

    fits: dict[str, dict[str, object]] = {}
    modes = [m for m in args.modes.split(",") if m]
    for mode in modes:
        det = Detector(args.backbone, threads=args.threads, crossfit_bank=mode)
        t0 = time.perf_counter()
        det.fit_features(f_train)
        t_fit = time.perf_counter() - t0
        maps, smax = det.anomaly_maps(f_test)
        scores = det.variant_scores(maps, smax)
        pred_score = scores["structcore"]
        thr = det.decision_threshold_
        fits[mode] = {
            "fit_s": t_fit,
            "fit_over_one_coreset": t_fit / t_coreset,
            "timings": dict(det.fit_timings_),
            "decision_threshold": thr,
            "fpr_good_test": float(np.mean(pred_score[~labels] > thr)),
            "recall_defect": float(np.mean(pred_score[labels] > thr)),
            "auroc": {k: float(roc_auc_score(labels, v)) for k, v in scores.items()},
            "train_max_crossfit_mean": float(det.train_max_["crossfit"].mean()),
            "lambda": det.lambda_,
        }
        print(
            f"fit crossfit_bank={mode:<8} {t_fit:7.1f} s = {t_fit / t_coreset:4.2f} x one "
            f"coreset (bank {det.fit_timings_['bank']:.1f} s, calibration "
            f"{det.fit_timings_['calibration']:.1f} s); threshold {thr:.4f}: FPR on good "
            f"test {fits[mode]['fpr_good_test']:.3f}, recall {fits[mode]['recall_defect']:.3f}"
        )
    if set(modes) != {"coreset", "masked"}:
        _write(args, fits, len(train), len(test), t_feat, t_coreset)
        return 0
    a, b = fits["coreset"]["auroc"], fits["masked"]["auroc"]
    print("\n| score | AUROC coreset | AUROC masked | masked - coreset |\n|---|---|---|---|")
    for k in a:
        print(f"| {k} | {a[k]:.4f} | {b[k]:.4f} | {b[k] - a[k]:+.4f} |")
    worst = min(b[k] - a[k] for k in a)
    print(
        f"\nspeed-up of fit (masked vs coreset): "
        f"{fits['coreset']['fit_s'] / fits['masked']['fit_s']:.2f}x; "
        f"worst AUROC change over {len(a)} scores {worst:+.4f}; load {load_avg()}"
    )
    _write(args, fits, len(train), len(test), t_feat, t_coreset)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
