"""Product vs research: ``Detector(calibration="synthetic")`` against ``learned/cp+perlin``.

The research variant ``learned/cp+perlin`` (docs/ABLATION.md, issue 13) is now the product's
``calibration="synthetic"``. This check scores one data set three ways with the same seed and
settings (:class:`structcore.research.ablation.MapConfig` defaults for the backbone):

1. **research**: the harness's cached maps (fresh fold coresets, ``crossfit_bank="coreset"``)
   and synthetic-defect maps (all three makers; cp+perlin rows selected), scored by
   :func:`structcore.research.variants.score_variants` (``learned/cp+perlin``);
2. **product, same pieces**: ``Detector(calibration="synthetic", crossfit_bank="coreset")``
   ``.fit_features`` on the harness's cached train features, final bank and cp+perlin
   synthetic-defect features, then the test features through ``anomaly_maps`` and the
   stages: the same maps, so the scores should equal (1) up to float rounding (the research
   sums ``a . z`` with ``@``, the product in index order);
3. **product, default path**: ``Detector(calibration="synthetic").fit(train paths)`` and
   ``predict(test paths)``: masked fold banks (``crossfit_bank="masked"``, the default) and
   the defects' features computed fold by fold (other backbone batches than the harness's),
   so the numbers move a little.

    TORCH_HOME=../shared/weights PYTHONPATH=python python bench/synthetic_parity.py \\
        --root ../shared/datasets/mvtec_ad/bottle --n-train 30 --cache /tmp/synparity

Prints image AUROC of max(S) and of the learned score for each, alpha, the weights and the
largest score difference between (1) and (2); ``--json`` writes them too.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))

from structcore import Detector  # noqa: E402
from structcore.calibration import CalibrationWarning  # noqa: E402
from structcore.datasets import load_mvtec  # noqa: E402
from structcore.defects import MAKERS, SYNTHETIC_MAKERS  # noqa: E402
from structcore.metrics import image_auroc  # noqa: E402
from structcore.research import ablation  # noqa: E402
from structcore.research import variants as scores  # noqa: E402
from structcore.research.synthetic_defects import load_or_compute_synthetic_maps  # noqa: E402


def _one(cache: Path, pattern: str) -> Path:
    found = sorted(cache.glob(pattern))
    if len(found) != 1:
        raise SystemExit(f"expected one {pattern} in {cache} (use a fresh --cache); got {found}")
    return found[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, required=True, help="an MVTec AD category folder")
    ap.add_argument("--n-train", type=int, default=30, help="seeded train subsample (30)")
    ap.add_argument("--backbone", default="mobilenet_v2")
    ap.add_argument("--cache", type=Path, required=True, help="a folder for this check only")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    ds = load_mvtec(args.root, max_train=args.n_train, seed=0)
    test = [s.image for s in ds.test]
    labels = np.array([s.label for s in ds.test])
    cfg = ablation.MapConfig(args.backbone)
    name = args.root.name
    out: dict[str, object] = {"set": name, "n_train": len(ds.train), "n_test": len(test)}
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731

    # 1. research
    t0 = time.perf_counter()
    ms = ablation.load_or_compute_split_maps(
        name, ds, cfg, args.cache, threads=args.threads, log=log
    )
    syn = load_or_compute_synthetic_maps(
        name, ds.train, test, cfg, args.cache, threads=args.threads, log=log
    )
    models: dict[str, object] = {}
    res = scores.score_variants(
        ms, ["learned/cp+perlin"], threads=args.threads, synthetic=syn, models=models
    )
    rm = models["learned/cp+perlin"]
    out["research"] = {
        "auroc_max": image_auroc(labels, res["max"]),
        "auroc_learned": image_auroc(labels, res["learned/cp+perlin"]),
        "alpha": rm.alpha,  # type: ignore[attr-defined]
        "weights": rm.a.tolist(),  # type: ignore[attr-defined]
        "seconds": time.perf_counter() - t0,
    }

    # 2. product on the harness's pieces (same features, bank, fold coresets, defect features)
    t0 = time.perf_counter()
    with np.load(_one(args.cache, f"features__{name}__{cfg.backbone}__*.npz")) as z:
        f_train, f_test = z["train"], z["test"]
    with np.load(_one(args.cache, f"bank__{name}__{cfg.backbone}__*.npz")) as z:
        bank = z["bank"]
    with np.load(_one(args.cache, f"synfeat__{name}__{cfg.backbone}__*.npz")) as z:
        f_syn = z["features"]
    n = len(ds.train)
    source = np.repeat(np.arange(n), len(MAKERS))
    keep = np.isin(np.tile(np.asarray(MAKERS), n), SYNTHETIC_MAKERS)
    params = dict(asdict(cfg), calibration="synthetic", threads=args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        det = Detector(**params, crossfit_bank="coreset").fit_features(
            f_train, bank=bank, defects=(f_syn[keep], source[keep])
        )
    maps, smax = det.anomaly_maps(f_test)
    st = det.stages()
    _, _, score = st.calibrator.transform(st.descriptor(maps), smax)
    out["product_same_pieces"] = {
        "auroc_max": image_auroc(labels, smax),
        "auroc_learned": image_auroc(labels, score),
        "alpha": det.learned_.alpha,
        "weights": det.weights_.tolist(),
        "max_abs_score_diff_vs_research": float(np.abs(score - res["learned/cp+perlin"]).max()),
        "maps_equal_research": bool(np.array_equal(maps, ms.test_maps)),
        "seconds": time.perf_counter() - t0,
    }

    # 3. product, default path from the image files
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        det = Detector(**params).fit(ds.train)
    pred = det.predict(test)
    out["product_fit_predict"] = {
        "crossfit_bank": det.crossfit_bank,
        "auroc_max": image_auroc(labels, pred.score_max),
        "auroc_learned": image_auroc(labels, pred.score),
        "alpha": det.learned_.alpha,
        "weights": det.weights_.tolist(),
        "threshold_fpr_good": float(pred.is_anomalous[labels == 0].mean()),
        "seconds": time.perf_counter() - t0,
    }
    print(json.dumps(out, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
