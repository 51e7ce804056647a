"""Private memory of one process holding a backbone: freed unused stages vs the whole network.

    PYTHONPATH=python python bench/bench_memory.py [--backbones mobilenet_v2,wide_resnet50_2]

Each measurement runs in a fresh interpreter (``--child``): import torch and structcore, build
``FeatureExtractor(backbone)`` (random init: the weights' values do not change their size),
run two batches of 16 images of 224 x 224; private memory (USS: ``Private_Clean`` +
``Private_Dirty`` of ``/proc/self/smaps_rollup``) after each step. ``keep`` replaces
``structcore.features._free_unused`` by a no-op, i.e. the backbone as torchvision builds it
(the behaviour before the stages after the deepest layer were freed). Linux only; prints a
table, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _uss_mib() -> float:
    total = 0
    with open("/proc/self/smaps_rollup") as fh:
        for line in fh:
            if line.startswith(("Private_Clean", "Private_Dirty")):
                total += int(line.split()[1])
    return total / 1024


def _child(backbone: str, mode: str) -> None:
    import numpy as np
    import torch

    import structcore.features as features
    from structcore.images import preprocess

    torch.set_num_threads(1)
    if mode == "keep":
        features._free_unused = lambda model, used: None
    out = {"imports": _uss_mib()}
    fx = features.FeatureExtractor(backbone, weights=None)
    out["built"] = _uss_mib()
    out["weights_mib"] = sum(p.numel() * p.element_size() for p in fx._model.parameters()) / 2**20
    x = np.random.default_rng(0).integers(0, 255, (16, 224, 224, 3), dtype=np.uint8)
    batch = preprocess(list(x), 256, 224)
    fx(batch)
    fx(batch)
    out["two_batches"] = _uss_mib()
    print(json.dumps(out))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backbones", default="mobilenet_v2,wide_resnet50_2")
    ap.add_argument("--child", nargs=2, metavar=("BACKBONE", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(*args.child)
        return 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent / "python"), env.get("PYTHONPATH", "")])
    print(
        "| backbone | stages | weights MiB | USS after imports | after building | after 2 batches |"
    )
    print("|---|---|---|---|---|---|")
    for bb in args.backbones.split(","):
        for mode in ("keep", "free"):
            res = subprocess.run(
                [sys.executable, __file__, "--child", bb, mode],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            r = json.loads(res.stdout.strip().splitlines()[-1])
            label = "all (before)" if mode == "keep" else "used only (now)"
            print(
                f"| {bb} | {label} | {r['weights_mib']:.1f} | {r['imports']:.0f} | "
                f"{r['built']:.0f} | {r['two_batches']:.0f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
