"""Why does the synthetic-defect score lose where it loses? A diagnostic, not a score.

For each cached set: the logistic weights ``b_j / b_max`` of the learned score
(:mod:`structcore.research.learned_score`) fitted on cross-fitted good maps vs

* the synthetic defects (``learned/cp+perlin``: label-free, what the variant uses), and
* the set's *real* defective test images vs its good test images (an in-sample **oracle**
  that uses the test labels: it shows which direction real defects need, never a score),

both on the same standardisation (mu/sigma of the cross-fitted good maps) and the same
alpha (0.1). Also the mean z of each component on synthetic and on real defects.

    PYTHONPATH=python python bench/learned_oracle.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))
sys.path.insert(0, str(HERE))

import accuracy  # noqa: E402
from structcore.kernels import describe  # noqa: E402
from structcore.research import ablation  # noqa: E402
from structcore.research import learned_score as ls  # noqa: E402
from structcore.research.synthetic_defects import load_or_compute_synthetic_maps  # noqa: E402

COMPS = ("std", "top_mean", "tv")


def main() -> int:
    cache = HERE.parent / "runs" / "accuracy"
    data_root = HERE.parent.parent / "shared" / "datasets"
    wanted = accuracy.DEFAULT_DATASETS.split(",")
    data = accuracy._datasets(data_root, 100, 100, wanted, cache, 100)
    cfg = ablation.MapConfig("mobilenet_v2")
    print(
        "| set | fitted on | alpha | b_std/b_max | b_top/b_max | b_tv/b_max | "
        "mean z defects (max/std/top/tv) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in wanted:
        ds = data[name]
        test = [s.image for s in ds.test]
        try:
            ms = ablation.load_or_compute_split_maps(name, ds, cfg, cache, compute=False)
            syn = load_or_compute_synthetic_maps(name, ds.train, test, cfg, cache, compute=False)
        except FileNotFoundError:
            print(f"skip {name}: not cached", file=sys.stderr)
            continue
        good = np.column_stack([ms.cal_max["crossfit"], describe(ms.cal_maps["crossfit"], COMPS)])
        sel = np.isin(syn.maker, ["cutpaste", "perlin"])
        sd = np.column_stack([syn.max, describe(syn.maps, COMPS)])[sel]
        te = np.column_stack([ms.test_max, describe(ms.test_maps, COMPS)])
        subsets = accuracy._subsets(name, ms.defects)
        mu, sig = good.mean(0), good.std(0)
        rows = [("synthetic (cp+perlin)", good, sd)]
        for sname, r in subsets.items():
            y = ms.labels[r].astype(bool)
            rows.append((f"real test: {sname}", te[r][~y], te[r][y]))
        for label, x0, x1 in rows:
            m = ls.fit_learned_score(
                x0[:, 0], x0[:, 1:], x1[:, 0], x1[:, 1:], components=COMPS, alphas=(0.1,)
            )
            r = m.coef[1:] / m.coef[0] if m.coef[0] > 0 else np.full(3, np.nan)
            z = ((x1 - mu) / sig).mean(0)
            print(
                f"| {name} | {label} | 0.1 | {r[0]:+.3f} | {r[1]:+.3f} | {r[2]:+.3f} | "
                + " / ".join(f"{v:+.1f}" for v in z)
                + " |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
