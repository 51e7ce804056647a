"""End-to-end benchmark: ``Detector.predict`` images/s, structcore vs NumPy reference vs anomalib.

Usage::

    PYTHONPATH=python python bench/bench_e2e.py           # 50 train, 40 test images, 3 repeats
    PYTHONPATH=python python bench/bench_e2e.py --quick   # 10 train, 8 test images, a few minutes

Prints tables and writes ``bench/results/e2e.json`` (issue 4 §5). Needs anomalib 2.7 (and its
timm) for the anomalib rows; without it those rows are skipped with a message.

What is measured, on the same decoded images (MVTec AD ``bottle``; PNG decoding happens once,
before any timing, and is not counted; every implementation receives the same uint8 RGB
arrays):

* ``structcore``: ``Detector(backend="cpp").predict(images)``; wall time of the call and its
  ``Prediction.timings`` split (preprocess, features, knn, map, descriptor + calibration).
* ``reference``: the same fitted detector with ``backend="reference"`` (pure NumPy kernels;
  features still come from torch). Its kNN handles one query at a time in float64, so it runs
  on ``--ref-images`` images, once per thread count; images/s is per image all the same.
* ``anomalib``: anomalib 2.7's ``Patchcore`` lightning module, built with
  ``configure_pre_processor(image_size=(256, 256), center_crop_size=(224, 224))``; its
  ``pre_processor.transform`` (the transform anomalib's engine applies in its inference
  loops) and then the steps of ``PatchcoreModel.forward`` in eval mode, called one by one on the
  torch model (``feature_extractor`` + ``feature_pooler`` + ``generate_embedding`` +
  ``reshape_embedding`` = features; ``nearest_neighbors`` = kNN;
  ``compute_anomaly_score`` + ``anomaly_map_generator`` = map), under
  ``torch.inference_mode`` as anomalib's engine runs prediction. Input conversion
  uint8 -> float [0, 1] (what anomalib's image reader does) counts as preprocessing.
  The row ``anomalib model(x)`` times the unsplit ``model(transform(x))`` call, interleaved
  with the others, to check that the split adds nothing; speedups are taken over the faster
  of the two anomalib rows.
  The post-processor (score normalisation, thresholds) is not run.

Matched between the two libraries: the images, resize 256 -> centre crop 224, the backbone
architecture and its weights (the same tensors are loaded into both: torchvision's ImageNet
MobileNetV2 file mapped onto timm's ``mobilenetv2_100`` by position, bit-identical features
checked below; WideResNet-50-2 with one seeded random initialisation, since its ImageNet file
is not available offline), the layers, the 3x3 patch aggregation and bilinear upsampling,
the feature dimension (structcore ``dim`` >= the channel count, so no channel pooling, as
anomalib does none), the coreset ratio, k = 1 patch scores, PatchCore's reweighted image
score (anomalib ``num_neighbors=9``; structcore ``reweight=True``), Gaussian sigma 4 px, the
batch size and the thread counts (``torch.set_num_threads`` for both; structcore's kernels
``threads=``; BLAS via threadpoolctl).
Not matched (anomalib exposes no setting): anomalib's coreset projects with a sparse random
projection at eps = 0.9 (a few hundred dimensions), structcore with a dense 128-dimensional
one; anomalib's map upsamples patch scores with nearest-neighbour interpolation, structcore
bilinearly; structcore also computes the StructCore descriptor and calibration per image,
which anomalib has no counterpart for; structcore's ``fit`` also builds 5 cross-fit banks for
calibration, which anomalib does not do (its fit = features + one coreset). An extra
WideResNet row ``structcore dim=1024`` is structcore's default (PatchCore's channel pooling
1536 -> 1024).

The weights' values do not change the amount of work (dense convolutions and GEMMs), so
random weights time the same as trained ones.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import blas_threads, cpu_model, load_avg

os.environ.setdefault("TQDM_DISABLE", "1")  # anomalib's coreset progress bar

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared"
STAGES = ("preprocess", "features", "knn", "map", "descriptor")
MNV2_FILE = "mobilenet_v2-b0353104.pth"

#: Backbone name -> (structcore name, structcore layers, timm name, timm layers, channels).
#: ``channels`` is the concatenated channel count C; structcore runs with ``dim=max(1024, C)``
#: (no channel pooling, as anomalib).
CONFIGS: dict[str, tuple[str, tuple[str, ...], str, tuple[str, ...], int]] = {
    "mobilenet_v2": (
        "mobilenet_v2",
        ("features.6", "features.13"),
        "mobilenetv2_100",
        ("blocks.2", "blocks.4"),
        32 + 96,
    ),
    "wide_resnet50_2": (
        "wide_resnet50_2",
        ("layer2", "layer3"),
        "wide_resnet50_2",
        ("layer2", "layer3"),
        512 + 1024,
    ),
}


# ---------------------------------------------------------------------------------------------
# data and weights


def load_images(root: Path, n_train: int, n_test: int) -> dict[str, Any]:
    """Decode the first ``n_train`` train/good images and ``n_test`` evenly spaced test images."""
    from PIL import Image

    train_paths = sorted((root / "train" / "good").glob("*.png"))[:n_train]
    all_test = sorted((root / "test").glob("*/*.png"))
    pick = np.unique(np.linspace(0, len(all_test) - 1, min(n_test, len(all_test))).round())
    test_paths = [all_test[int(i)] for i in pick]

    def read(p: Path) -> np.ndarray:
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)

    train = np.stack([read(p) for p in train_paths])
    test = np.stack([read(p) for p in test_paths])
    labels = np.array([p.parent.name != "good" for p in test_paths], dtype=np.int64)
    return {"train": train, "test": test, "labels": labels}


def backbone_weights(backbone: str, tmp: Path) -> tuple[str, dict[str, Any], str]:
    """(structcore ``weights=`` value, state dict for anomalib, description)."""
    import torch
    import torchvision

    if backbone == "mobilenet_v2":
        hub = Path(os.environ.get("TORCH_HOME", "")) / "hub" / "checkpoints" / MNV2_FILE
        if hub.is_file():
            sd = torch.load(hub, map_location="cpu", weights_only=True)
            return "default", dict(sd), f"torchvision ImageNet IMAGENET1K_V1 ({hub})"
        print(f"  {MNV2_FILE} not under $TORCH_HOME: random weights for both libraries")
    torch.manual_seed(0)
    model = getattr(torchvision.models, backbone)(weights=None)
    sd = model.state_dict()
    path = tmp / f"{backbone}_random.pth"
    torch.save(sd, path)
    return str(path), dict(sd), "random (torchvision init, torch.manual_seed(0)), same tensors"


def load_into_timm(features_model: Any, state: dict[str, Any]) -> None:
    """Load a torchvision state dict into a timm ``features_only`` model by position.

    torchvision's and timm's MobileNetV2 / ResNets hold the same tensors in the same order
    (only the names differ for MobileNetV2); every shape is checked.
    """
    import torch

    keys = list(features_model.state_dict())
    src = [k for k in state if not k.startswith(("classifier", "fc."))]
    if len(src) < len(keys):
        raise ValueError(f"state dict has {len(src)} tensors, timm model needs {len(keys)}")
    own = features_model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for k, s in zip(keys, src[: len(keys)], strict=True):
        if tuple(own[k].shape) != tuple(state[s].shape):
            raise ValueError(f"shape mismatch mapping {s} -> {k}")
        mapped[k] = state[s]
    features_model.load_state_dict(mapped, strict=True)


# ---------------------------------------------------------------------------------------------
# the three implementations


class StructcoreImpl:
    def __init__(self, name: str, det: Any, backend: str) -> None:
        self.name = name
        self.det = det
        self.backend = backend

    def predict(self, images: np.ndarray, threads: int) -> tuple[float, dict[str, float], Any]:
        self.det.set_params(backend=self.backend, threads=threads)
        t0 = time.perf_counter()
        pred = self.det.predict(images)
        total = time.perf_counter() - t0
        t = dict(pred.timings)
        stages = {s: float(t.get(s, 0.0)) for s in STAGES}
        stages["descriptor"] += float(t.get("calibration", 0.0))
        return total, stages, pred


class AnomalibImpl:
    name = "anomalib"

    def __init__(self, module: Any, batch_size: int, crop: int) -> None:
        self.module = module
        self.model = module.model
        self.transform = module.pre_processor.transform
        self.batch_size = batch_size
        self.crop = crop

    def _prep(self, batch: np.ndarray) -> Any:
        import torch

        x = torch.from_numpy(batch).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
        return self.transform(x)

    def fit(self, images: np.ndarray, ratio: float, bank: str = "coreset") -> dict[str, float]:
        """Features of ``images`` into anomalib's store, then its bank: anomalib's own
        KCenterGreedy coreset (``bank="coreset"``), or (``"random"``) a seeded random subset
        of the size that coreset would have (``int(n * ratio)`` rows, anomalib's rule): the
        same shapes, so the same predict work, without anomalib's ~45-minute WideResNet
        coreset; its fit time then is not anomalib's."""
        import torch

        torch.manual_seed(0)
        self.model.train()
        t = {"preprocess": 0.0, "features": 0.0, "bank": 0.0}
        for i in range(0, len(images), self.batch_size):
            t0 = time.perf_counter()
            x = self._prep(images[i : i + self.batch_size])
            t1 = time.perf_counter()
            self.model(x)  # training mode: stores the embeddings
            t["preprocess"] += t1 - t0
            t["features"] += time.perf_counter() - t1
        t0 = time.perf_counter()
        if bank == "random":
            m = self.model
            store = torch.vstack(m.embedding_store)
            m.embedding_store.clear()
            gen = torch.Generator().manual_seed(0)
            keep = torch.randperm(store.shape[0], generator=gen)[: int(store.shape[0] * ratio)]
            m.memory_bank = store[keep].contiguous()
        else:
            self.module.coreset_sampling_ratio = ratio
            self.module.fit()  # KCenterGreedy coreset
        t["bank"] = time.perf_counter() - t0
        self.model.eval()
        return t

    def _predict_batch(self, batch: np.ndarray, st: dict[str, float]) -> tuple[Any, Any]:
        m = self.model
        t0 = time.perf_counter()
        x = self._prep(batch).type(m.memory_bank.dtype)
        t1 = time.perf_counter()
        feats = m.feature_extractor(x)
        feats = {layer: m.feature_pooler(f) for layer, f in feats.items()}
        emb = m.generate_embedding(feats)
        b, _, w, h = emb.shape
        emb = m.reshape_embedding(emb)
        t2 = time.perf_counter()
        scores, loc = m.nearest_neighbors(embedding=emb, n_neighbors=1)
        t3 = time.perf_counter()
        scores = scores.reshape((b, -1))
        loc = loc.reshape((b, -1))
        pred_score = m.compute_anomaly_score(scores, loc, emb)
        amap = m.anomaly_map_generator(scores.reshape((b, 1, w, h)), x.shape[-2:])
        t4 = time.perf_counter()
        st["preprocess"] += t1 - t0
        st["features"] += t2 - t1
        st["knn"] += t3 - t2
        st["map"] += t4 - t3
        return pred_score, amap

    def predict(self, images: np.ndarray, threads: int) -> tuple[float, dict[str, float], Any]:
        import torch

        st = dict.fromkeys(STAGES, 0.0)
        scores = []
        t0 = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                s, _ = self._predict_batch(images[i : i + self.batch_size], st)
                scores.append(s)
        total = time.perf_counter() - t0
        return total, st, torch.cat(scores).numpy()


class AnomalibUnsplit:
    """anomalib's ``PatchcoreModel.forward`` in one call per batch (no stage split)."""

    name = "anomalib model(x)"

    def __init__(self, impl: AnomalibImpl) -> None:
        self.impl = impl

    def predict(self, images: np.ndarray, threads: int) -> tuple[float, dict[str, float], Any]:
        import torch

        bs = self.impl.batch_size
        scores = []
        t0 = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(images), bs):
                x = self.impl._prep(images[i : i + bs])
                scores.append(self.impl.model(x).pred_score)
        total = time.perf_counter() - t0
        # no stage split: the whole call is reported as "other"
        return total, dict.fromkeys(STAGES, 0.0), torch.cat(scores).numpy()


def build_anomalib(
    timm_name: str,
    layers: tuple[str, ...],
    state: dict[str, Any],
    batch_size: int,
    resize: int,
    crop: int,
) -> AnomalibImpl:
    from anomalib.models.image.patchcore import Patchcore

    module = Patchcore(
        backbone=timm_name,
        layers=list(layers),
        pre_trained=False,
        num_neighbors=9,
        pre_processor=Patchcore.configure_pre_processor((resize, resize), (crop, crop)),
        post_processor=False,
        evaluator=False,
        visualizer=False,
    )
    load_into_timm(module.model.feature_extractor.feature_extractor, state)
    module.eval()
    return AnomalibImpl(module, batch_size, crop)


# ---------------------------------------------------------------------------------------------
# measurement


Run = tuple[float, float, dict[str, float]]  # wall s, process CPU s, stage s


def timed(impl: Any, images: np.ndarray, threads: int) -> tuple[Run, Any]:
    c0 = time.process_time()
    total, stages, pred = impl.predict(images, threads)
    return (total, time.process_time() - c0, stages), pred


def summarise(runs: list[Run], n_images: int) -> dict[str, Any]:
    totals = [r[0] for r in runs]
    med = statistics.median(totals)
    cpu = statistics.median(r[1] for r in runs)
    # the stage split of the repeat with the median total (lower middle for even counts), so
    # that the stages and "other" add up to the reported total
    mid = sorted(range(len(runs)), key=lambda i: runs[i][0])[(len(runs) - 1) // 2]
    stages = dict(runs[mid][2])
    return {
        "n_images": n_images,
        "repeats": len(runs),
        "total_s": med,
        "best_s": min(totals),
        "all_s": totals,
        "images_per_s": n_images / med,
        "best_images_per_s": n_images / min(totals),
        "cpu_s_per_image": cpu / n_images,
        "stage_s": stages,
        "stage_ms_per_image": {s: 1e3 * v / n_images for s, v in stages.items()},
        "other_ms_per_image": 1e3 * (totals[mid] - sum(stages.values())) / n_images,
    }


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError:  # pragma: no cover
        return None
    if len(np.unique(labels)) < 2:
        return None
    return float(roc_auc_score(labels, scores))


def run_backbone(
    backbone: str, data: dict[str, Any], args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    import torch

    from structcore import Detector
    from structcore import features as features_module
    from structcore.images import preprocess

    sc_name, sc_layers, timm_name, timm_layers, channels = CONFIGS[backbone]
    weights, state, wdesc = backbone_weights(backbone, tmp)
    train, test, labels = data["train"], data["test"], data["labels"]
    ref_test = test[: args.ref_images]
    print(f"\n== {backbone}: weights {wdesc}")
    out: dict[str, Any] = {"weights": wdesc, "fit": {}, "threads": {}, "checks": {}}

    torch.set_num_threads(args.fit_threads)
    dims = [("structcore", max(1024, channels), "float32")]
    if backbone == "wide_resnet50_2" and not args.no_dim1024:
        dims.append(("structcore dim=1024", 1024, "float32"))
    if args.bf16:
        dims.append(("structcore bf16", max(1024, channels), "bfloat16"))
    if args.unfolded:
        dims.append(("structcore unfolded", max(1024, channels), "float32"))
    impls: list[Any] = []
    with blas_threads(args.fit_threads):
        for label, dim, precision in dims:
            det = Detector(
                sc_name,
                layers=sc_layers,
                weights=weights,
                dim=dim,
                backbone_precision=precision,
                coreset_ratio=args.ratio,
                k=1,
                reweight=True,
                batch_size=args.batch_size,
                threads=args.fit_threads,
                seed=0,
            )
            t0 = time.perf_counter()
            # fit builds the backbone; the "unfolded" row keeps its batch norms as separate
            # layers (as before they were folded into the convolutions): the fold's effect
            with features_module._batchnorm_folding(label != "structcore unfolded"):
                det.fit(train)
            total = time.perf_counter() - t0
            out["fit"][label] = {
                "total_s": total,
                **det.fit_timings_,
                "bank_rows": int(det.bank_.shape[0]),
                "feature_dim": int(det.feature_dim_),
            }
            print(
                f"  fit {label:<20} {total:7.1f} s  {fmt_split(det.fit_timings_)}"
                f"  bank {det.bank_.shape[0]} x {det.feature_dim_}"
            )
            impls.append(StructcoreImpl(label, det, "cpp"))
        ref = StructcoreImpl("reference", impls[0].det, "reference") if args.ref_images else None
        anom = None
        if not args.no_anomalib:
            try:
                anom = build_anomalib(timm_name, timm_layers, state, args.batch_size, 256, 224)
            except ImportError as exc:
                print(f"  anomalib unavailable ({exc}); its rows are skipped")
        if anom is not None:
            t0 = time.perf_counter()
            ft = anom.fit(train, args.ratio, args.anomalib_bank)
            total = time.perf_counter() - t0
            bank = anom.model.memory_bank
            out["fit"]["anomalib"] = {
                "bank_kind": args.anomalib_bank,
                "total_s": total,
                **ft,
                "bank_rows": int(bank.shape[0]),
                "feature_dim": int(bank.shape[1]),
            }
            print(
                f"  fit {'anomalib':<20} {total:7.1f} s  {fmt_split(ft)}"
                f"  bank {bank.shape[0]} x {bank.shape[1]}"
                + (
                    "  (random subset: fit time not anomalib's)"
                    if args.anomalib_bank == "random"
                    else ""
                )
            )
            impls.append(anom)
            impls.append(AnomalibUnsplit(anom))

    # Same inputs -> same features? (preprocessing and backbone of the two libraries)
    if anom is not None:
        x_sc = preprocess(list(test[:2]), 256, 224)
        with torch.inference_mode():
            x_an = anom._prep(test[:2])
            f_sc = impls[0].det.extractor_(x_sc)
            fe = anom.model.feature_extractor(x_sc)
            fe = {k: anom.model.feature_pooler(v) for k, v in fe.items()}
            f_an = anom.model.generate_embedding(fe).permute(0, 2, 3, 1).numpy()
        out["checks"] = {
            "preprocess_max_abs_diff": float((x_sc - x_an).abs().max()),
            "features_max_abs_diff_same_input": float(np.abs(f_sc - f_an).max()),
            "features_max_abs": float(np.abs(f_an).max()),
        }
        print(f"  checks: {out['checks']}")

    for threads in args.threads:
        torch.set_num_threads(threads)
        with blas_threads(threads):
            for impl in impls:  # warm-up (oneDNN primitives, caches) at this thread count
                impl.predict(test[: args.batch_size], threads)
            runs: dict[str, list[Run]] = {i.name: [] for i in impls}
            last: dict[str, Any] = {}
            for _ in range(args.repeats):
                for impl in impls:
                    run, last[impl.name] = timed(impl, test, threads)
                    runs[impl.name].append(run)
            res = {name: summarise(r, len(test)) for name, r in runs.items()}
            if ref is not None:
                run, _ = timed(ref, ref_test, threads)
                res["reference"] = summarise([run], len(ref_test))
        # the faster of anomalib's split and unsplit medians: the conservative baseline
        base = max(
            (res[n]["images_per_s"] for n in ("anomalib", AnomalibUnsplit.name) if n in res),
            default=None,
        )
        for r in res.values():
            r["speedup_vs_anomalib"] = r["images_per_s"] / base if base else None
        if "reference" in res:
            for r in res.values():
                r["speedup_vs_reference"] = r["images_per_s"] / res["reference"]["images_per_s"]
        acc = {}
        for name, pred in last.items():
            if name.startswith("structcore"):
                acc[name] = {
                    "max": auroc(labels, pred.score_max),
                    "structcore": auroc(labels, pred.score),
                }
            else:
                acc[name] = {"max": auroc(labels, pred)}
        out["threads"][str(threads)] = {"results": res, "image_auroc": acc, "load_avg": load_avg()}
        print_table(backbone, threads, res, args.batch_size)
    out["image_auroc"] = out["threads"][str(args.threads[0])]["image_auroc"]
    print(f"  image AUROC on the {len(test)} test images (sanity check): {out['image_auroc']}")
    return out


def fmt_split(t: dict[str, float]) -> str:
    return "(" + ", ".join(f"{k} {v:.1f}" for k, v in t.items()) + ")"


def print_table(backbone: str, threads: int, res: dict[str, Any], bs: int) -> None:
    print(f"\n  {backbone}, {threads} thread(s), batch {bs}; ms per image (medians)")
    head = (
        f"  {'implementation':<20} {'img/s':>7} {'x anom':>7} {'total':>8} "
        + " ".join(f"{s[:7]:>8}" for s in STAGES)
        + f" {'other':>7} {'cpu':>7}  n x rep"
    )
    print(head)
    for name, r in res.items():
        ms = r["stage_ms_per_image"]
        sp = r.get("speedup_vs_anomalib")
        print(
            f"  {name:<20} {r['images_per_s']:7.2f} "
            f"{(f'{sp:.2f}' if sp else '-'):>7} {1e3 * r['total_s'] / r['n_images']:8.1f} "
            + " ".join(f"{ms[s]:8.1f}" for s in STAGES)
            + f" {r['other_ms_per_image']:7.1f} {1e3 * r['cpu_s_per_image']:7.1f}"
            f"  {r['n_images']} x {r['repeats']}"
        )
    print(
        "  (x anom: images/s over the faster of the two anomalib rows; cpu: process CPU ms per"
        " image, all threads)"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="10 train / 8 test images, 1 repeat")
    p.add_argument("--backbones", default="mobilenet_v2,wide_resnet50_2")
    p.add_argument("--root", type=Path, default=SHARED / "datasets" / "mvtec_ad" / "bottle")
    p.add_argument("--train", type=int, default=None, help="train images (default 50)")
    p.add_argument("--test", type=int, default=None, help="test images (default 40)")
    p.add_argument(
        "--ref-images",
        type=int,
        default=None,
        help="test images for the NumPy reference path (default 2; 0 skips it)",
    )
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default 3)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--ratio", type=float, default=0.1, help="coreset ratio")
    p.add_argument("--threads", default=None, help="comma list (default 2,1)")
    p.add_argument("--fit-threads", type=int, default=2)
    p.add_argument("--no-anomalib", action="store_true")
    p.add_argument("--no-dim1024", action="store_true")
    p.add_argument(
        "--anomalib-bank",
        choices=("coreset", "random"),
        default="coreset",
        help="anomalib's bank: its KCenterGreedy coreset (default), or a seeded random subset "
        "of the same size (same predict work; for predict timings when its coreset would "
        "take too long; its fit row is then not anomalib's fit time)",
    )
    p.add_argument(
        "--unfolded",
        action="store_true",
        help="also a structcore row whose backbone keeps its batch norms as separate layers "
        "(not folded into the convolutions), same dim: what the fold gains",
    )
    p.add_argument(
        "--bf16",
        action="store_true",
        help="also a structcore row with backbone_precision='bfloat16' (the same dim)",
    )
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "e2e.json")
    a = p.parse_args(argv)
    q = a.quick
    a.train = a.train or (10 if q else 50)
    a.test = a.test or (8 if q else 40)
    a.ref_images = (1 if q else 2) if a.ref_images is None else a.ref_images
    a.repeats = a.repeats or (1 if q else 3)
    a.threads = [int(t) for t in (a.threads or ("2" if q else "2,1")).split(",")]
    a.backbones = [b for b in a.backbones.split(",") if b]
    for b in a.backbones:
        if b not in CONFIGS:
            p.error(f"--backbones: {b!r} is not one of {sorted(CONFIGS)}")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.root / "train" / "good").is_dir():
        print(
            f"bench_e2e: MVTec AD bottle not found at {args.root} (need train/good and test/);"
            " skipping. Pass --root DIR."
        )
        return 0
    weights_dir = SHARED / "weights"
    if "TORCH_HOME" not in os.environ and weights_dir.is_dir():
        os.environ["TORCH_HOME"] = str(weights_dir.resolve())

    import torch

    import structcore

    versions: dict[str, str] = {"torch": torch.__version__, "numpy": np.__version__}
    for mod in ("torchvision", "anomalib", "timm"):
        with contextlib.suppress(ImportError):
            versions[mod] = __import__(mod).__version__
    print(structcore.build_info())
    print(f"versions {versions}; cpu {cpu_model()} x {os.cpu_count()}; load {load_avg()}")
    t0 = time.perf_counter()
    data = load_images(args.root, args.train, args.test)
    print(
        f"decoded {len(data['train'])} train + {len(data['test'])} test images "
        f"({data['test'].shape[1]}x{data['test'].shape[2]}, {int(data['labels'].sum())} "
        f"defective) in {time.perf_counter() - t0:.1f} s (not timed below)"
    )
    result: dict[str, Any] = {
        "build_info": structcore.build_info(),
        "machine": {
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_start": load_avg(),
        },
        "versions": versions,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "images": {
            "root": str(args.root),
            "train": len(data["train"]),
            "test": len(data["test"]),
            "test_defective": int(data["labels"].sum()),
            "size": list(data["test"].shape[1:3]),
            "resize": 256,
            "crop": 224,
        },
        "backbones": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for backbone in args.backbones:
            result["backbones"][backbone] = run_backbone(backbone, data, args, Path(tmp))
    result["machine"]["load_avg_end"] = load_avg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
