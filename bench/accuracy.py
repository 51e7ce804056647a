"""Image-score accuracy ablation (issue 7): data sets x backbones x score variants.

One command builds (or loads from ``--cache``) the maps of every data set and backbone, scores
every variant of :mod:`structcore.research.variants`, and prints one table of image AUROC with a 95%
paired, stratified bootstrap interval of the difference to max pooling; then the
leave-one-set-out choice of a default. JSON goes to ``bench/results/accuracy.json``.

    TORCH_HOME=../shared/weights PYTHONPATH=python python bench/accuracy.py
    PYTHONPATH=python python bench/accuracy.py --only-cached          # re-score from the cache

Data (``--data``, default ``../shared/datasets``):

* ``bottle``: MVTec AD bottle, official test set (83 images); the 209 train images
  subsampled to ``--bottle-train`` (default 100; seeded, ``load_mvtec(max_train=, seed=0)``);
* ``mtd``: Magnetic Tile, the loaders' seeded split (``split_normal``: 190 of 952 MT_Free
  images to test, seed 0), train capped at ``--mtd-train`` (default 100, the next images of
  the same seeded permutation); test = those 190 good + all 392 defective images;

The train caps keep a full run feasible on a shared 2-core machine: the greedy coreset is
quadratic in the number of train patches and runs six times per set (final bank + 5
cross-fit folds).
* ``mtd_<Class>`` (Blowhole, Break, Crack, Fray, Uneven): the same maps restricted to one
  defect class plus the same 190 good test images (five sets; they share their good images,
  so leave-one-out selection treats all ``mtd*`` sets as one group).
* ``deeppcb``: DeepPCB (MVTec-style layout), train capped at ``--pcb-train`` (default 100,
  seeded), test 89 good + 88 defective;
* ``syn_<texture>``: the project's synthetic textures (``structcore.synthetic.write_dataset``,
  seed 0, 60 train / 40 good + 45 defective test per texture), written once into the cache.

Families (``family``): bottle, mtd, deeppcb, synthetic. Issue 13's leave-one-family-out
choice (rule declared in docs/ABLATION.md before the results) is printed after issue 7's
leave-one-set-out tables. Synthetic-defect maps of every set (``research/synthetic_defects``)
are computed and cached too, for the ``learned*`` variants (``--no-synthetic`` skips them).
Those variants fit with the product's code (:func:`structcore.learned_calibration
.fit_learned_score`, what ``Detector(calibration="synthetic")`` runs; defect makers from
:mod:`structcore.defects`) on the harness's cached maps, scored by its fresh fold coresets
(the product's ``crossfit_bank="coreset"``; ``bench/synthetic_parity.py`` checks that the
product reproduces them).

``--crossfit-bank masked`` evaluates with the product's default fold banks instead (the final
bank minus the held-out fold's rows, ``structcore.crossfit.masked_bank``): the cross-fitted
good maps *and* the synthetic-defect maps (CutPaste + Perlin from
``Detector.defect_features``, exactly as ``Detector.fit`` makes and scores them), so
``learned/cp+perlin`` is what ``Detector(calibration="synthetic")`` scores by default
(tests/test_research_ablation.py checks it on a small set). Every cross-fit-calibrated
variant changes with it; cached separately (``maps_masked__``, ``synmaps_masked__``).
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

from structcore.datasets import load_magnetic_tile, load_mvtec  # noqa: E402
from structcore.research import ablation  # noqa: E402
from structcore.research import variants as scores  # noqa: E402
from structcore.research.synthetic_defects import load_or_compute_synthetic_maps  # noqa: E402

BACKBONES = ("mobilenet_v2", "efficientnet_lite0", "efficientnet_lite2")
MTD_CLASSES = ("Blowhole", "Break", "Crack", "Fray", "Uneven")
#: The project's synthetic textures (structcore.synthetic), written once, seeded, to the cache.
SYNTHETIC = ("brushed_metal", "woven_fabric", "ceramic_tiles")
SYNTHETIC_SIZES = {"n_train": 60, "n_test_good": 40, "n_test_defect": 15, "size": 256, "seed": 0}
DEFAULT_DATASETS = "bottle,mtd,deeppcb," + ",".join(f"syn_{c}" for c in SYNTHETIC)


def family(set_name: str) -> str:
    """Data family of an evaluation set: the unit held out by the leave-one-family-out choice.

    ``bottle`` (MVTec AD objects), ``mtd`` (Magnetic Tile and its class subsets), ``deeppcb``
    (printed circuit boards), ``synthetic`` (the project's procedural textures).
    """
    if set_name.startswith("mtd"):
        return "mtd"
    if set_name.startswith("syn_"):
        return "synthetic"
    return set_name


def _synthetic_root(cache: Path) -> Path:
    from structcore.research.ablation import config_hash
    from structcore.synthetic import write_dataset

    root = cache / f"synthetic_textures__{config_hash(SYNTHETIC_SIZES)}"
    if not (root / SYNTHETIC[-1] / "test").is_dir():
        tmp = root.with_name(root.name + ".tmp")
        write_dataset(tmp, categories=SYNTHETIC, **SYNTHETIC_SIZES)
        tmp.replace(root)
    return root


def _datasets(
    data: Path,
    mtd_train: int,
    bottle_train: int | None,
    wanted: list[str],
    cache: Path,
    pcb_train: int | None = 100,
) -> dict[str, object]:
    out: dict[str, object] = {}
    b = data / "mvtec_ad" / "bottle"
    if b.is_dir():
        out["bottle"] = load_mvtec(b, max_train=bottle_train, seed=0)
    m = data / "magnetic_tile"
    if m.is_dir():
        out["mtd"] = load_magnetic_tile(m, test_fraction=0.2, seed=0, max_train=mtd_train)
    d = data / "deeppcb"
    if d.is_dir():
        out["deeppcb"] = load_mvtec(d, max_train=pcb_train, seed=0)
    if any(w.startswith("syn_") for w in wanted):
        root = _synthetic_root(cache)
        for c in SYNTHETIC:
            out[f"syn_{c}"] = load_mvtec(root, c)
    return out


def _subsets(name: str, defects: np.ndarray) -> dict[str, np.ndarray]:
    """Evaluation sets (name -> test row indices) drawn from one cached data set."""
    all_rows = np.arange(defects.size)
    out = {name: all_rows}
    if name == "mtd":
        good = defects == "good"
        for c in MTD_CLASSES:
            rows = np.flatnonzero(good | (defects == c))
            if (defects == c).any():
                out[f"mtd_{c}"] = rows
    return out


def _synthetic_auroc(ms: object, syn: object) -> dict[str, float]:
    """AUROC of max(S): cross-fitted good maps vs each maker's synthetic-defect maps."""
    out = {}
    good = ms.cal_max["crossfit"]  # type: ignore[attr-defined]
    for mk in dict.fromkeys(syn.maker.tolist()):  # type: ignore[attr-defined]
        d = syn.max[syn.maker == mk]  # type: ignore[attr-defined]
        y = np.r_[np.zeros(good.size), np.ones(d.size)]
        out[mk] = ablation.auroc(y, np.r_[good, d])
    return out


def _synthetic_z(ms: object, syn: object) -> dict[str, dict[str, float]]:
    """Mean cross-fitted z of max and the paper's components on each maker's defects."""
    from structcore.kernels import describe

    comps = ("std", "top_mean", "tv")
    pc = np.column_stack(
        [ms.cal_max["crossfit"], describe(ms.cal_maps["crossfit"], comps)]  # type: ignore[attr-defined]
    )
    ps = np.column_stack([syn.max, describe(syn.maps, comps)])  # type: ignore[attr-defined]
    z = scores.zscores(ps, *scores.center_scale(pc))
    out = {}
    for mk in dict.fromkeys(syn.maker.tolist()):  # type: ignore[attr-defined]
        sel = syn.maker == mk  # type: ignore[attr-defined]
        out[mk] = {c: float(z[sel, j].mean()) for j, c in enumerate(("max", *comps))}
    return out


def _family_report(results: dict) -> tuple[str, dict]:
    """Issue 13: per-family table and the leave-one-family-out choice (declared rule)."""
    sel_keys = [k for k in results if k.split("/")[0] != "mtd"]
    deltas = {k: {v: r["delta"] for v, r in results[k].items()} for k in sel_keys}
    fam = {k: family(k.split("/")[0]) for k in sel_keys}
    variants = list(results[sel_keys[0]])
    lines = ["\n### Per family: family-weighted mean and worst per-set delta to max\n"]
    fams = list(dict.fromkeys(fam.values()))
    lines.append(
        "| variant | " + " | ".join(fams) + " | mean (all) | worst (all) |"
        " mean (real) | worst (real) |"
    )
    lines.append("|---|" + "---|" * (len(fams) + 4))
    real = {k: d for k, d in deltas.items() if fam[k] != "synthetic"}
    for v in variants:
        cells = []
        for f in fams:
            vals = [deltas[k][v] for k in deltas if fam[k] == f]
            cells.append(f"{np.mean(vals):+.4f} ({min(vals):+.4f})")
        m_all, w_all = ablation.family_stats(deltas, fam, v)
        m_real, w_real = ablation.family_stats(real, fam, v) if real else (np.nan, np.nan)
        lines.append(
            f"| {v} | "
            + " | ".join(cells)
            + f" | {m_all:+.4f} | {w_all:+.4f} | {m_real:+.4f} | {w_real:+.4f} |"
        )
    # compact table: the reference scores, the best existing variant (family-weighted mean
    # over every family: an in-sample label, for display only) and the learned ones
    existing = [
        v
        for v in variants
        if not v.startswith("learned") and v != "max" and v not in scores.POST_HOC
    ]
    best = max(existing, key=lambda v: ablation.family_stats(deltas, fam, v)[0])
    show = ["paper/l2/auto/train", "struct/paper/l2/train", "paper/l2/auto/crossfit", best]
    show += [
        v
        for v in ("learned/cp+perlin", "learned/all", "learned/painter", "learned_notv/cp+perlin")
        if v in variants
    ]
    show = list(dict.fromkeys(v for v in show if v in variants))
    lines.append(f"\n### Per set: max AUROC and delta [95% CI] (best existing: {best})\n")
    lines.append("| set | max | " + " | ".join(show) + " |")
    lines.append("|---|---|" + "---|" * len(show))
    for k in results:
        r = results[k]
        cells = []
        for v in show:
            e = r[v]
            mark = "+" if e["lo"] > 0 else ("-" if e["hi"] < 0 else "")
            cells.append(f"{e['delta']:+.4f} [{e['lo']:+.3f},{e['hi']:+.3f}]{mark}")
        lines.append(f"| {k} | {r['max']['auroc']:.4f} | " + " | ".join(cells) + " |")
    out: dict = {"best_existing": best}
    if len(fams) < 2:
        return "\n".join(lines), out
    for rule in ("tolerance", "minimax"):
        cands = [v for v in variants if v not in scores.POST_HOC]
        sel = ablation.select_leave_one_family_out(deltas, fam, candidates=cands, rule=rule)
        out[rule] = sel
        lines.append(f"\n### Leave-one-family-out choice, rule {rule!r}\n")
        lines.append(
            "| held-out family | chosen | selection mean | selection worst | "
            "held-out sets (delta) | held-out mean |"
        )
        lines.append("|---|---|---|---|---|---|")
        for f, r in sel.items():
            held = ", ".join(f"{k.split('/')[0]} {d:+.4f}" for k, d in r["held_out"].items())
            lines.append(
                f"| {f} | {r['variant']} | {r['selection_mean']:+.4f} | "
                f"{r['selection_min']:+.4f} | {held} | {r['held_out_mean']:+.4f} |"
            )
        goal = ablation.held_out_goal(sel, rule)
        if goal is not None:
            lines.append(goal[1])
            out[f"{rule}_summary"] = goal[0]
    return "\n".join(lines), out


def _learned_markdown(learned: dict) -> str:
    lines = [
        "\n### Learned scores: synthetic-defect max AUROC and fitted weights\n",
        "| set/backbone | max AUROC on synthetic (per maker) | variant | alpha | "
        "b_j / b_max (z-units of max per z of the component) | fallback |",
        "|---|---|---|---|---|---|",
    ]
    for key, d in learned.items():
        syn = ", ".join(f"{k} {v:.3f}" for k, v in d["synthetic_max_auroc"].items())
        for name, m in d["models"].items():
            a = ", ".join(
                f"{c} {w / m['coef'][0] if m['coef'][0] > 0 else 0:+.3f}"
                for c, w in zip(m["components"], m["coef"][1:], strict=True)
            )
            lines.append(f"| {key} | {syn} | {name} | {m['alpha']:g} | {a} | {m['fallback']} |")
    lines.append("\n### Synthetic defects: mean cross-fitted z (max, std, top_mean, tv)\n")
    lines.append("| set/backbone | " + " | ".join(("cutpaste", "perlin", "painter")) + " |")
    lines.append("|---|---|---|---|")
    for key, d in learned.items():
        cells = []
        for mk in ("cutpaste", "perlin", "painter"):
            z = d["synthetic_z"].get(mk)
            cells.append("" if z is None else " / ".join(f"{v:+.1f}" for v in z.values()))
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _diagnostics_markdown(diag: dict[str, object]) -> str:
    lines = [
        "\n### Components alone (cross-fitted z): mean z good / defective, AUROC\n",
        "| set/backbone | "
        + " | ".join(("max", *scores.DIAGNOSTIC_COMPONENTS, "ref_z_max"))
        + " |",
        "|---|" + "---|" * (len(scores.DIAGNOSTIC_COMPONENTS) + 2),
    ]
    for key, d in diag.items():
        cf = d["crossfit"]  # type: ignore[index]
        cells = [
            f"{v['z_good_mean']:+.1f}/{v['z_defect_mean']:+.1f} {v['auroc']:.3f}"
            for v in cf.values()
        ]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines.append("\n### Same-train z (paper's mode): mean z of good test images\n")
    lines.append("| set/backbone | " + " | ".join(("max", *scores.DIAGNOSTIC_COMPONENTS)) + " |")
    lines.append("|---|" + "---|" * (len(scores.DIAGNOSTIC_COMPONENTS) + 1))
    for key, d in diag.items():
        tr = d["train"]  # type: ignore[index]
        cells = [f"{v['z_good_mean']:+.1f}" for k, v in tr.items() if k != "ref_z_max"]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    ap.add_argument("--cache", type=Path, default=HERE.parent / "runs" / "accuracy")
    ap.add_argument("--backbones", default=",".join(BACKBONES))
    ap.add_argument("--datasets", default=DEFAULT_DATASETS)
    ap.add_argument("--mtd-train", type=int, default=100)
    ap.add_argument("--pcb-train", type=int, default=100)
    ap.add_argument("--bottle-train", type=int, default=100)
    ap.add_argument("--coreset", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--variants", default=None, help="comma list (default: all)")
    ap.add_argument("--only-cached", action="store_true", help="skip sets not in the cache")
    ap.add_argument(
        "--no-synthetic", action="store_true", help="no synthetic-defect maps (no learned*)"
    )
    ap.add_argument("--build-only", action="store_true", help="fill the cache, score nothing")
    ap.add_argument(
        "--crossfit-bank",
        choices=("coreset", "masked"),
        default="coreset",
        help="fold banks of the cross-fitted and synthetic-defect maps: fresh fold coresets "
        "(issue 7/13 runs) or the product's default, the final bank minus the fold's rows",
    )
    ap.add_argument("--out", type=Path, default=HERE / "results" / "accuracy.json")
    args = ap.parse_args(argv)

    os.environ.setdefault("TORCH_HOME", str(HERE.parent.parent / "shared" / "weights"))
    import torch

    torch.set_num_threads(max(1, args.threads))
    t_start = time.perf_counter()
    wanted = [d for d in args.datasets.split(",") if d]
    data = _datasets(
        args.data, args.mtd_train, args.bottle_train, wanted, args.cache, args.pcb_train
    )
    backbones = [b for b in args.backbones.split(",") if b]
    variant_names = None if args.variants is None else args.variants.split(",")

    results: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    timing: dict[str, dict[str, float]] = {}
    diagnostics: dict[str, object] = {}
    learned: dict[str, object] = {}
    meta: dict[str, object] = {}
    for bb in backbones:
        cfg = ablation.MapConfig(bb, coreset_ratio=args.coreset)
        for dname in wanted:
            if dname not in data:
                print(f"skip {dname}: not under {args.data}", file=sys.stderr)
                continue
            ds = data[dname]
            t0 = time.perf_counter()
            try:
                ms = ablation.load_or_compute_split_maps(
                    dname,
                    ds,
                    cfg,
                    args.cache,
                    threads=args.threads,
                    log=None
                    if args.only_cached
                    else lambda m: print(m, file=sys.stderr, flush=True),
                    compute=not args.only_cached,
                    crossfit_bank=args.crossfit_bank,
                )
            except FileNotFoundError:
                print(f"skip {dname}/{bb}: not cached", file=sys.stderr)
                continue
            t_maps = time.perf_counter() - t0
            meta[f"{dname}/{bb}"] = {**ms.meta, "split": ds.split}
            syn = None
            t_syn0 = time.perf_counter()
            if not args.no_synthetic:
                try:
                    syn = load_or_compute_synthetic_maps(
                        dname,
                        ds.train,
                        [s.image for s in ds.test],
                        cfg,
                        args.cache,
                        threads=args.threads,
                        log=None
                        if args.only_cached
                        else lambda m: print(m, file=sys.stderr, flush=True),
                        compute=not args.only_cached,
                        crossfit_bank=args.crossfit_bank,
                    )
                    meta[f"{dname}/{bb}"]["synthetic"] = syn.meta
                except FileNotFoundError:
                    print(f"{dname}/{bb}: no synthetic-defect maps", file=sys.stderr)
            t_syn = time.perf_counter() - t_syn0
            if args.build_only:
                print(
                    f"{dname}/{bb}: maps ready ({t_maps:.1f} s; synthetic {t_syn:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
                continue
            t1 = time.perf_counter()
            models: dict[str, object] = {}
            all_scores = scores.score_variants(
                ms, names=variant_names, synthetic=syn, models=models
            )
            t_var = time.perf_counter() - t1
            if syn is not None:
                learned[f"{dname}/{bb}"] = {
                    "models": {k: m.state() | {"cv": m.cv} for k, m in models.items()},
                    "synthetic_max_auroc": _synthetic_auroc(ms, syn),
                    "synthetic_z": _synthetic_z(ms, syn),
                }
            for sname, rows in _subsets(dname, ms.defects).items():
                key = f"{sname}/{bb}"
                diagnostics[key] = {
                    mode: scores.component_diagnostics(ms, rows, mode)
                    for mode in ("crossfit", "train")
                }
                results[key] = ablation.paired_bootstrap(
                    ms.labels[rows],
                    {k: v[rows] for k, v in all_scores.items()},
                    "max",
                    resamples=args.resamples,
                    seed=0,
                )
            timing[f"{dname}/{bb}"] = {
                "maps_s": t_maps,
                "synthetic_s": t_syn,
                "variants_s": t_var,
                "bootstrap_s": time.perf_counter() - t1 - t_var,
            }
            print(
                f"{dname}/{bb}: maps {t_maps:.1f} s, {len(all_scores)} variants {t_var:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    if args.build_only:
        return 0
    report = ablation.report(results)
    print(report["markdown"])
    fam_md, fam_sel = _family_report(results)
    print(fam_md)
    print(_learned_markdown(learned))
    print(_diagnostics_markdown(diagnostics))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "argv": sys.argv,
        "crossfit_bank": args.crossfit_bank,
        "results": results,
        "selection": report["selection"],
        "family_selection": fam_sel,
        "learned": learned,
        "diagnostics": diagnostics,
        "timings_s": timing,
        "meta": meta,
        "total_s": time.perf_counter() - t_start,
    }
    args.out.write_text(json.dumps(doc, indent=1, default=str))
    print(f"\nwrote {args.out} ({doc['total_s']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
