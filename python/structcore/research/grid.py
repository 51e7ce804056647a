"""The standard grid of image-score variants of a fitted detector, from the same maps.

Keys of :func:`variant_scores` (all from the same maps and max scores):

* ``"max"``, ``"structcore"`` (the detector's configured score), ``"struct_only"`` (its D);
* ``"{descriptor}/{norm}/{lam}/{mode}"``: the hybrid score for descriptor in
  (``paper``, ``extended``), norm in (``l2``, ``linf``), lam in (``auto``, ``0.05``), mode in
  the fitted calibration modes, e.g. ``"paper/l2/auto/crossfit"``;
* ``"struct/{descriptor}/{norm}/{mode}"``: D alone for the same grid.

Grid variants are calibrated silently (no CalibrationWarning) on the detector's stored
calibration descriptors (``train_phi_``, ``train_max_``); the configured one warned in
``fit``. Only public attributes of the detector are read.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from .._validation import as_float_array
from ..calibration import CalibrationWarning, StructCalibrator
from ..descriptor import EXTENDED_COMPONENTS, PAPER_COMPONENTS, Descriptor

if TYPE_CHECKING:
    from ..detector import Detector

__all__ = ["GRID_LAMBDA", "variant_scores"]

#: The fixed lambda of the variant grid (the author's configs).
GRID_LAMBDA = 0.05


def variant_scores(
    detector: Detector, maps: object, score_max: object = None
) -> dict[str, np.ndarray]:
    """Image scores of the standard variant grid (module docstring), all from the same maps.

    Parameters
    ----------
    detector : structcore.Detector
        Fitted.
    maps : array_like of shape (B, crop, crop), float32
        Maps from :meth:`~structcore.Detector.predict` (``Prediction.maps``).
    score_max : array_like of shape (B,) or None
        The max scores to combine with (``Prediction.score_max``); None: max of ``maps``
        (not allowed with ``reweight=True``, whose factor needs the features).

    Returns
    -------
    scores : dict of str to ndarray of shape (B,), float64

    Raises
    ------
    NotFittedError
        ``detector`` is not fitted.
    TypeError, ValueError
        Bad ``maps`` or ``score_max`` (dtype, shape, non-finite).
    """
    st = detector.stages()
    crop = int(detector.crop)
    m = as_float_array(maps, "maps", ndim=3)
    if m.shape[1:] != (crop, crop):
        raise ValueError(
            f"maps must have shape (B, {crop}, {crop}) like predict's maps; got {m.shape}"
        )
    b = m.shape[0]
    if score_max is None:
        if detector.reweight:
            raise ValueError("score_max is required when reweight=True (pass Prediction.score_max)")
        mx = st.mapper.max_scores(m)
    else:
        mx = as_float_array(score_max, "score_max", ndim=1, dtype=np.float64)
        if mx.shape != (b,):
            raise ValueError(f"score_max must have shape ({b},); got {mx.shape}")
    _, dist, score = st.calibrator.transform(st.descriptor(m), mx)
    out: dict[str, np.ndarray] = {"max": mx, "structcore": score, "struct_only": dist}
    stored = tuple(detector.stored_components_)
    for mode in detector.calibration_modes_:
        phi_all = Descriptor(
            stored,
            detector.pixel_thresholds_[mode],
            backend=detector.backend,
            threads=detector.threads,
        )(m)
        for dname, comps in (("paper", PAPER_COMPONENTS), ("extended", EXTENDED_COMPONENTS)):
            cols = [stored.index(c) for c in comps]
            for norm in ("l2", "linf"):
                for lam in ("auto", GRID_LAMBDA):
                    cal = StructCalibrator(norm, lam, detector.threshold_quantile, names=comps)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", CalibrationWarning)
                        cal.fit(detector.train_phi_[mode][:, cols], detector.train_max_[mode])
                    _, dd, ss = cal.transform(phi_all[:, cols], mx)
                    lam_key = "auto" if isinstance(lam, str) else f"{lam:g}"
                    out[f"{dname}/{norm}/{lam_key}/{mode}"] = ss
                    if isinstance(lam, str):
                        out[f"struct/{dname}/{norm}/{mode}"] = dd
    return out
