"""Issue 13, item 3: tiled inference for elongated parts on Magnetic Tile.

The accuracy harness' split (``load_magnetic_tile(test_fraction=0.2, seed=0, max_train=100)``:
100 train, 190 good + 392 defective test images), MobileNetV2, library defaults (10% coreset,
sigma 4 px, k 1). Each image is resized to a shorter side of ``--size`` and cut into
``ceil(L / size)`` overlapping square tiles along its long side
(:mod:`structcore.research.tiling`); the bank holds the patches of every train tile; the tile
maps are stitched (overlaps averaged) into one map of the whole image. Image scores: max of
the stitched map and the same-train (max, phi) variants of
:data:`structcore.research.tiling.TILED_VARIANTS`, paired bootstrap against max on the union
and per class as ``bench/finer_maps.py``. Pixel AUROC: every 2nd pixel (both axes) of each
stitched map against the full mask resized (nearest) to the stitched extent (the same pixel
density as ``finer_maps``' 112 x 112 grid at 224 px, but over the whole image).

    TORCH_HOME=../shared/weights PYTHONPATH=python python bench/tiled.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))

from _common import delta_table  # noqa: E402
from structcore.datasets import load_magnetic_tile  # noqa: E402
from structcore.research import ablation  # noqa: E402
from structcore.research import tiling as tl  # noqa: E402


def _log(m: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {m}", file=sys.stderr, flush=True)


def _save(path: Path, tm: tl.TiledMaps) -> None:
    shapes = np.array([m.shape for m in tm.maps], dtype=np.int64)
    flat = np.concatenate([m.ravel() for m in tm.maps])
    np.savez(path, flat=flat, shapes=shapes, max=tm.max, timings=json.dumps(tm.timings_s))


def _load(path: Path) -> tl.TiledMaps:
    with np.load(path, allow_pickle=False) as z:
        flat, shapes = z["flat"], z["shapes"]
        ends = np.cumsum(shapes.prod(axis=1))
        maps = [flat[e - h * w : e].reshape(h, w) for e, (h, w) in zip(ends, shapes, strict=True)]
        return tl.TiledMaps(maps, z["max"], [], json.loads(str(z["timings"])))


def _centre_window(h: int, w: int, size: int, resize: int = 256, crop: int = 224) -> tuple:
    """The part of an ``h x w`` stitched map that the default ``resize``/``crop`` keeps.

    The default pipeline resizes the shorter side to ``resize`` and keeps the centre
    ``crop`` square: in the stitched map's scale (shorter side ``size``) that is the centre
    ``round(size * crop / resize)`` square.
    """
    c = round(size * crop / resize)
    t, left = (h - c) // 2, (w - c) // 2
    return slice(t, t + c), slice(left, left + c)


def _default_max(ds, cache: Path | None) -> np.ndarray | None:
    """max(S) of the default 256/224 maps from ``finer_maps``' cache (None if not cached)."""
    if cache is None:
        return None
    cfg = ablation.MapConfig("mobilenet_v2", resize=256, crop=224)
    for cf in (True, False):
        try:
            ms = ablation.load_or_compute_split_maps(
                "mtd", ds, cfg, cache, compute=False, crossfit=cf
            )
        except FileNotFoundError:
            continue
        return ms.test_max
    return None


def _diagnostics(
    ds, test: tl.TiledMaps, labels: np.ndarray, size: int, cache: Path | None = None
) -> dict:
    """Coverage diagnostics (use test labels and masks; never a score).

    * ``max_centre_auroc``: image AUROC of the max of each stitched map inside the window the
      default 256/224 crop keeps (:func:`_centre_window`): tiling's maps, the default's view;
    * ``pixel_auroc_centre``: pixel AUROC inside that window (every 2nd pixel);
    * ``defective_outside_crop``: defective test images whose mask has no pixel inside the
      default 256/224 centre crop (:func:`structcore.datasets.load_mask`);
    * per subset (all good + the defective images inside / outside that crop): AUROC of the
      tiled max, of the centre-window max and (when ``cache`` holds the 256/224 maps of
      ``bench/finer_maps.py``) of the default pipeline's max, and the paired bootstrap
      interval of tiled max minus default max (the same test images).
    """
    from PIL import Image
    from sklearn.metrics import roc_auc_score

    from structcore.datasets import load_mask

    mc = np.array([float(m[_centre_window(*m.shape, size)].max()) for m in test.maps])
    y, s = tl.pixel_samples(test.maps, [t.mask for t in ds.test], step=1)
    ys, ss, i = [], [], 0
    for m in test.maps:  # the full-resolution samples, cut to the window per map
        h, w = m.shape
        yy, sv_ = y[i : i + h * w].reshape(h, w), s[i : i + h * w].reshape(h, w)
        win = _centre_window(h, w, size)
        ys.append(yy[win][::2, ::2].ravel())
        ss.append(sv_[win][::2, ::2].ravel())
        i += h * w
    default_max = _default_max(ds, cache)
    out_crop = np.zeros(labels.size, dtype=bool)
    for j, t in enumerate(ds.test):
        if t.label and t.mask is not None:
            with Image.open(t.image) as im:
                hw = (im.height, im.width)
            out_crop[j] = not load_mask(t.mask, image_size=hw, resize=256, crop=224).any()
    outside = int(out_crop.sum())
    good = labels == 0
    sub = {}
    for name, sel in (("inside", (labels == 1) & ~out_crop), ("outside", out_crop)):
        r = good | sel
        sub[f"max_auroc_defects_{name}_crop"] = float(roc_auc_score(labels[r], test.max[r]))
        sub[f"max_centre_auroc_defects_{name}_crop"] = float(roc_auc_score(labels[r], mc[r]))
        if default_max is not None:
            sub[f"default_256_224_max_auroc_defects_{name}_crop"] = float(
                roc_auc_score(labels[r], default_max[r])
            )
    if default_max is not None:
        b = ablation.paired_bootstrap(
            labels, {"default": default_max, "tiled": test.max}, "default", seed=0
        )["tiled"]
        sub["tiled_max_minus_default_max"] = {k: b[k] for k in ("delta", "lo", "hi")}
    return {
        **sub,
        "max_centre_auroc": float(roc_auc_score(labels, mc)),
        "pixel_auroc_centre": float(roc_auc_score(np.concatenate(ys), np.concatenate(ss))),
        "defective_outside_crop": outside,
        "defective": int(labels.sum()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    ap.add_argument("--cache", type=Path, default=HERE.parent / "runs" / "tiled")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--maps-cache",
        type=Path,
        default=HERE.parent / "runs" / "accuracy",
        help="finer_maps' cache (for the default 256/224 max in the diagnostics)",
    )
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--max-train", type=int, default=100)
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "tiled.json")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    ds = load_magnetic_tile(
        args.data / "magnetic_tile", test_fraction=0.2, seed=0, max_train=args.max_train
    )
    labels = np.array([s.label for s in ds.test])
    defects = np.array([s.defect for s in ds.test])
    args.cache.mkdir(parents=True, exist_ok=True)
    tag = f"mtd__mobilenet_v2__tiled{args.size}__train{args.max_train}"
    c_path, t_path = args.cache / f"cal__{tag}.npz", args.cache / f"test__{tag}.npz"
    if c_path.is_file() and t_path.is_file():
        cal, test = _load(c_path), _load(t_path)
    else:
        t0 = time.perf_counter()
        det, cal = tl.fit_tiled(
            [str(p) for p in ds.train], size=args.size, threads=args.threads, log=_log
        )
        _log(f"fit done in {time.perf_counter() - t0:.1f} s (bank {det.bank_.shape[0]} rows)")
        cal.timings_s["bank_rows"] = float(det.bank_.shape[0])
        cal.timings_s["n_tiles"] = float(sum(la.n_tiles for la in cal.layouts))
        test = tl.tiled_maps(det, [str(s.image) for s in ds.test], log=_log)
        test.timings_s["n_tiles"] = float(sum(la.n_tiles for la in test.layouts))
        _save(c_path, cal)
        _save(t_path, test)
    t1 = time.perf_counter()
    phi_cal = tl.describe_maps(cal.maps, threads=args.threads)
    phi_test = tl.describe_maps(test.maps, threads=args.threads)
    describe_s = time.perf_counter() - t1
    scores = tl.variant_scores_from_phi(phi_cal, cal.max, phi_test, test.max)
    sets = {"mtd": np.arange(labels.size)}
    for c in ("Blowhole", "Break", "Crack", "Fray", "Uneven"):
        sets[f"mtd_{c}"] = np.flatnonzero((defects == "good") | (defects == c))
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
    from sklearn.metrics import roc_auc_score

    y, s = tl.pixel_samples(test.maps, [t.mask for t in ds.test], step=2)
    pix = float(roc_auc_score(y, s))
    diag = _diagnostics(ds, test, labels, args.size, args.maps_cache)
    n_tr, n_te = len(ds.train), labels.size
    ct, tt = cal.timings_s, test.timings_s
    fit_s = ct["features"] + ct["fit_features"] + ct["calibration_train"]
    pred_s = tt["features"] + tt["maps"]
    out = {
        "size": args.size,
        "image": res,
        "pixel_auroc": pix,
        "pixel_samples": int(y.size),
        "timings_s": {"cal": ct, "test": tt, "describe_all": describe_s},
        "fit_s_per_image": fit_s / n_tr,
        "predict_s_per_image": pred_s / n_te + describe_s / (n_tr + n_te),
        "diagnostics": diag,
        "tiles_per_image": {
            "train": ct.get("n_tiles", 0) / n_tr,
            "test": tt.get("n_tiles", 0) / n_te,
        },
    }
    print(
        f"\n## tiled, size {args.size}: pixel AUROC {pix:.4f} ({y.size} pixels), fit "
        f"{out['fit_s_per_image']:.3f} s/img, predict {out['predict_s_per_image']:.3f} s/img, "
        f"tiles/img {out['tiles_per_image']}"
    )
    print(f"diagnostics: {json.dumps(diag)}")
    print(delta_table(res, list(scores), list(sets), digits=4))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
