"""The detector's parameters: one check of every constructor setting (scikit-learn style:
``Detector.__init__`` only stores, ``fit`` validates through :func:`check_params`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._validation import (
    check_choice,
    check_int,
    check_positive_float,
    check_quantile,
    check_threads,
)
from .calibration import CALIBRATION_MODES, check_lam
from .crossfit import CROSSFIT_BANKS
from .descriptor import resolve_components
from .features import BACKBONES, PRECISIONS

__all__ = ["check_params"]


def check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Check the detector parameters ``params`` (:meth:`structcore.Detector.get_params`).

    Returns
    -------
    checked : dict
        Normalised values of ``dim``, ``resize``, ``crop``, ``coreset_ratio``,
        ``projection_dim``, ``k``, ``sigma``, ``components`` (the descriptor's names),
        ``norm``, ``calibration``, ``folds``, ``crossfit_bank``, ``seed``,
        ``backbone_precision`` and ``batch_size``.

    Raises
    ------
    TypeError, ValueError
        The first invalid parameter, named, with its value.
    """
    g = params.get
    p: dict[str, Any] = {}
    backbone = g("backbone")
    if not isinstance(backbone, str) or backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)}; got {backbone!r}")
    p["dim"] = check_int(g("dim"), "dim", low=1)
    p["resize"] = check_int(g("resize"), "resize", low=1, high=16384)
    p["crop"] = check_int(g("crop"), "crop", low=1, high=16384)
    if p["crop"] > p["resize"]:
        raise ValueError(f"crop must be <= resize; got crop={g('crop')}, resize={g('resize')}")
    r = check_positive_float(g("coreset_ratio"), "coreset_ratio")
    if r > 1.0:
        raise ValueError(f"coreset_ratio must be in (0, 1]; got {g('coreset_ratio')!r}")
    p["coreset_ratio"] = r
    pdim = g("projection_dim")
    p["projection_dim"] = None if pdim is None else check_int(pdim, "projection_dim", low=1)
    p["k"] = check_int(g("k"), "k", low=1)
    p["sigma"] = check_positive_float(g("sigma"), "sigma", allow_zero=True)
    p["components"] = resolve_components(g("descriptor"))
    p["norm"] = check_choice(g("norm"), "norm", ("l2", "linf"))
    check_lam(g("lam"))
    p["calibration"] = check_choice(g("calibration"), "calibration", CALIBRATION_MODES)
    p["folds"] = check_int(g("folds"), "folds", low=2)
    p["crossfit_bank"] = check_choice(g("crossfit_bank"), "crossfit_bank", CROSSFIT_BANKS)
    for name in ("threshold_quantile", "pixel_quantile"):
        check_quantile(g(name), name)
    for name in ("reweight", "progress", "variants"):
        if not isinstance(g(name), (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False; got {g(name)!r}")
    p["seed"] = check_int(g("seed"), "seed", low=0, high=2**63 - 1)
    p["backbone_precision"] = check_choice(
        g("backbone_precision"), "backbone_precision", PRECISIONS
    )
    p["batch_size"] = check_int(g("batch_size"), "batch_size", low=1)
    check_choice(g("backend"), "backend", ("cpp", "reference"))
    check_threads(g("threads"))
    return p
