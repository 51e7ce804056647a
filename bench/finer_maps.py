"""Issue 13, item 3: does structure help more at a finer map where max pooling is weak?

Magnetic Tile (the accuracy harness' split: 100 train, 190 good + 392 defective test images),
MobileNetV2, library defaults except the preprocessing: ``resize``/``crop`` 256/224 (the
default), 320/320 and 448/448 (maps 40x40 and 56x56 patches instead of 28x28). Maps, banks
and fold banks are cached like ``bench/accuracy.py`` (same cache). Per setting: image AUROC
of a few score variants (max and the structural ones) on the union and on each class, pixel
AUROC on a fixed 112 x 112 sample grid of every map (the same number of pixels per image at
every resolution; the maps are Gaussian-blurred, so the subsample loses little), and the
time per image (features; kNN + map) on this machine.

    TORCH_HOME=../shared/weights PYTHONPATH=python python bench/finer_maps.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))

from _common import delta_table  # noqa: E402
from structcore.datasets import load_magnetic_tile, load_mask  # noqa: E402
from structcore.research import ablation  # noqa: E402
from structcore.research import variants as sv  # noqa: E402

SETTINGS = ((256, 224), (320, 320), (448, 448))
VARIANTS = (
    "max",
    "paper/l2/auto/train",
    "paper/l2/auto/crossfit",
    "struct/paper/l2/train",
    "fullcov/auto/train",
    "topk/502",
)


def _pixel_auroc(ds, maps: np.ndarray, resize: int, crop: int, grid: int = 112) -> float:
    from PIL import Image
    from sklearn.metrics import roc_auc_score

    idx = np.rint(np.linspace(0, crop - 1, grid)).astype(int)
    ys, ss = [], []
    for s, m in zip(ds.test, maps, strict=True):
        with Image.open(s.image) as im:
            size = (im.height, im.width)
        mask = load_mask(s.mask, image_size=size, resize=resize, crop=crop)
        ys.append(mask[np.ix_(idx, idx)].ravel())
        ss.append(m[np.ix_(idx, idx)].ravel())
    return float(roc_auc_score(np.concatenate(ys), np.concatenate(ss)))


def _score(
    ms: ablation.MapSet, names: Sequence[str], threads: int
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Scores of ``names`` on one context; those needing absent (cross-fit) maps are skipped."""
    ctx = sv.VariantContext(ms.test_maps, ms.test_max, ms.cal_maps, ms.cal_max, ms.folds, threads)
    out: dict[str, np.ndarray] = {"max": ctx.test_max}
    skipped: list[str] = []
    for n in names:
        if n == "max":
            continue
        if "crossfit" not in ms.cal_maps and "crossfit" in n:
            skipped.append(n)
            continue
        try:
            out[n] = np.asarray(sv.VARIANTS[n](ctx), dtype=np.float64)
        except KeyError:  # uses the cross-fit maps without saying so in its name
            skipped.append(n)
    return out, skipped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    ap.add_argument("--cache", type=Path, default=HERE.parent / "runs" / "accuracy")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--settings", default=",".join(f"{r}/{c}" for r, c in SETTINGS))
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument(
        "--all-variants",
        action="store_true",
        help="score every variant of structcore.research.variants.VARIANTS (except the "
        "learned ones, which need synthetic-defect maps), not only the six listed here",
    )
    ap.add_argument(
        "--no-crossfit",
        action="store_true",
        help="skip the cross-fit fold banks and maps (same-train calibration only); the "
        "variants that need cross-fitted maps are then left out",
    )
    ap.add_argument("--out", type=Path, default=HERE / "results" / "finer_maps.json")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    ds = load_magnetic_tile(args.data / "magnetic_tile", test_fraction=0.2, seed=0, max_train=100)
    test = [s.image for s in ds.test]
    labels = np.array([s.label for s in ds.test])
    defects = [s.defect for s in ds.test]
    out: dict[str, object] = {}
    for st in args.settings.split(","):
        resize, crop = (int(v) for v in st.split("/"))
        cfg = ablation.MapConfig("mobilenet_v2", resize=resize, crop=crop)
        t0 = time.perf_counter()
        ms = ablation.load_or_compute_maps(
            "mtd",
            ds.train,
            test,
            labels,
            defects,
            cfg,
            args.cache,
            threads=args.threads,
            log=lambda m: print(m, file=sys.stderr, flush=True),
            crossfit=not args.no_crossfit,
        )
        wall = time.perf_counter() - t0
        t_sc = time.perf_counter()
        names = [k for k in sv.VARIANTS if k not in sv.LEARNED] if args.all_variants else VARIANTS
        scores, skipped = _score(ms, names, args.threads)
        score_s = time.perf_counter() - t_sc
        sets = {"mtd": np.arange(labels.size)}
        for c in ("Blowhole", "Break", "Crack", "Fray", "Uneven"):
            sets[f"mtd_{c}"] = np.flatnonzero((ms.defects == "good") | (ms.defects == c))
        res = {
            k: ablation.paired_bootstrap(
                labels[r],
                {v: s[r] for v, s in scores.items()},
                "max",
                resamples=args.resamples,
                seed=0,
            )
            for k, r in sets.items()
        }
        tm = ms.meta.get("timings_s", {})
        n_img = ms.meta.get("n_train", 100) + ms.meta.get("n_test", labels.size)
        out[st] = {
            "image": res,
            "pixel_auroc": _pixel_auroc(ds, ms.test_maps, resize, crop),
            "timings_s": tm,
            "features_s_per_image": tm.get("features", float("nan")) / n_img,
            "test_maps_s_per_image": tm.get("test_maps", float("nan")) / labels.size,
            "wall_s": wall,
            "variant_scoring_s": score_s,
            "variants_skipped": skipped,
            "grid": int(crop // 8),
        }
        r = out[st]
        print(
            f"\n## resize {resize} / crop {crop} (grid {crop // 8}x{crop // 8}): "
            f"pixel AUROC {r['pixel_auroc']:.4f}, features {r['features_s_per_image']:.3f} "
            f"s/img, kNN+map {r['test_maps_s_per_image']:.3f} s/img"
        )
        print(delta_table(res, list(scores), list(sets), digits=3))
        sys.stdout.flush()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
