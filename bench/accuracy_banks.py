"""Compare two ``bench/accuracy.py`` runs that differ in ``--crossfit-bank`` (issue 13).

Reads the JSON of a ``--crossfit-bank coreset`` run (the research numbers) and of a
``--crossfit-bank masked`` run (the product's default fold banks) and prints

* per set: max AUROC and, with 95% paired bootstrap intervals, the delta to max of the
  product's ``calibration="synthetic"`` (``learned/cp+perlin`` with masked banks), the same
  variant with fresh fold coresets, and the paper's hybrid ``paper/l2/auto/train`` (which
  does not depend on the fold banks);
* per family: family mean (worst set) of the cross-fit-dependent variants under both banks;
* issue 13's leave-one-family-out choice (rule declared in docs/ABLATION.md, tolerance and
  minimax) over the union of both runs' candidates: every variant of the coreset run plus
  every variant of the masked run as ``<name>@masked`` (post-hoc variants excluded; ties go
  to the coreset run's name, so a variant that does not depend on the fold banks counts
  once).

    PYTHONPATH=python python bench/accuracy_banks.py \\
        bench/results/accuracy_issue13_coreset.json bench/results/accuracy_issue13_masked.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))
sys.path.insert(0, str(HERE))

from accuracy import family  # noqa: E402
from structcore.research import ablation  # noqa: E402
from structcore.research import variants as scores  # noqa: E402

PRODUCT = "learned/cp+perlin"
SHOW = (
    "learned/cp+perlin",
    "learned/all",
    "learned/painter",
    "paper/l2/auto/crossfit",
    "ref_z/top64",
)


def _cell(e: dict) -> str:
    mark = "+" if e["lo"] > 0 else ("-" if e["hi"] < 0 else "")
    return f"{e['delta']:+.4f} [{e['lo']:+.3f},{e['hi']:+.3f}]{mark}"


def merged_deltas(core: dict, masked: dict) -> tuple[dict, dict, list[str]]:
    """Selection sets (no ``mtd`` union) -> variant -> delta, families, candidates."""
    keys = [k for k in core["results"] if k.split("/")[0] != "mtd"]
    if set(keys) != {k for k in masked["results"] if k.split("/")[0] != "mtd"}:
        raise SystemExit("the two runs cover different sets")
    deltas: dict[str, dict[str, float]] = {}
    for k in keys:
        d = {v: r["delta"] for v, r in core["results"][k].items()}
        d.update({f"{v}@masked": r["delta"] for v, r in masked["results"][k].items()})
        deltas[k] = d
    cands = [v for v in core["results"][keys[0]] if v not in scores.POST_HOC]
    cands += [f"{v}@masked" for v in masked["results"][keys[0]] if v not in scores.POST_HOC]
    return deltas, {k: family(k.split("/")[0]) for k in keys}, cands


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("coreset", type=Path, help="JSON of the --crossfit-bank coreset run")
    ap.add_argument("masked", type=Path, help="JSON of the --crossfit-bank masked run")
    args = ap.parse_args(argv)
    core = json.loads(args.coreset.read_text())
    masked = json.loads(args.masked.read_text())
    for doc, want in ((core, "coreset"), (masked, "masked")):
        got = doc.get("crossfit_bank", "coreset")
        if got != want:
            raise SystemExit(f"expected a {want!r} run, got crossfit_bank={got!r}")

    out = ["### Per set: delta to max [95% paired bootstrap interval]\n"]
    out.append(
        '| set | max | product `calibration="synthetic"` (masked) | learned/cp+perlin '
        "(coreset banks, research) | paper/l2/auto/train |"
    )
    out.append("|---|---|---|---|---|")
    one_bb = len({k.split("/")[1] for k in masked["results"]}) == 1
    for k, r in masked["results"].items():
        c = core["results"][k]
        if abs(c["max"]["auroc"] - r["max"]["auroc"]) > 1e-12:
            raise SystemExit(f"{k}: the runs' max pooling differs (other maps?)")
        out.append(
            f"| {k.split('/')[0] if one_bb else k} | {r['max']['auroc']:.4f} | "
            f"{_cell(r[PRODUCT])} | "
            f"{_cell(c[PRODUCT])} | {_cell(r['paper/l2/auto/train'])} |"
        )

    deltas, fam, cands = merged_deltas(core, masked)
    fams = list(dict.fromkeys(fam.values()))
    real = {k: d for k, d in deltas.items() if fam[k] != "synthetic"}
    out.append("\n### Per family: family mean (worst set); both banks\n")
    out.append(
        "| variant | banks | " + " | ".join(fams) + " | mean, real | worst, real | worst, all |"
    )
    out.append("|---|---|" + "---|" * (len(fams) + 3))
    for v in ("paper/l2/auto/train", *SHOW):
        for tag, name in (("coreset", v), ("masked", f"{v}@masked")):
            if v == "paper/l2/auto/train" and tag == "masked":
                continue  # same-train: independent of the fold banks
            cells = []
            for f in fams:
                vals = [deltas[k][name] for k in deltas if fam[k] == f]
                cells.append(f"{np.mean(vals):+.4f} ({min(vals):+.4f})")
            m_r, w_r = ablation.family_stats(real, fam, name)
            _, w_a = ablation.family_stats(deltas, fam, name)
            label = "either" if v == "paper/l2/auto/train" else tag
            out.append(
                f"| {v} | {label} | " + " | ".join(cells) + f" | {m_r:+.4f} | {w_r:+.4f} | "
                f"{w_a:+.4f} |"
            )

    summary: dict = {}
    for rule in ("tolerance", "minimax"):
        sel = ablation.select_leave_one_family_out(deltas, fam, candidates=cands, rule=rule)
        out.append(f"\n### Leave-one-family-out over both runs' candidates, rule {rule!r}\n")
        out.append(
            "| held-out family | chosen | selection mean | selection worst | held-out sets |"
        )
        out.append("|---|---|---|---|---|")
        for f, r in sel.items():
            held = ", ".join(
                f"{k.split('/')[0] if one_bb else k} {d:+.4f}" for k, d in r["held_out"].items()
            )
            out.append(
                f"| {f} | {r['variant']} | {r['selection_mean']:+.4f} | "
                f"{r['selection_min']:+.4f} | {held} |"
            )
        goal = ablation.held_out_goal(sel, rule)
        if goal is not None:
            out.append(goal[1])
            summary[rule] = goal[0]
    # the product variant alone against the goal, in-sample (no selection)
    m_r, w_r = ablation.family_stats(real, fam, f"{PRODUCT}@masked")
    product_met = w_r >= -ablation.FAMILY_TOLERANCE and m_r >= ablation.GOAL_MEAN
    out.append(
        f'\nproduct `calibration="synthetic"` (masked), in-sample over the real families: '
        f"mean {m_r:+.4f}, worst set {w_r:+.4f}; goal {'MET' if product_met else 'NOT met'}"
    )
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
