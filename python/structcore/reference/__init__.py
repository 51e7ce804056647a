"""Pure NumPy/SciPy reference versions of the C++ kernels.

Written for clarity, not speed: they are the test oracles and the baselines of ``bench/``.
Each mirrors the function of the same name in :mod:`structcore.kernels` (same signature,
same results within the documented tolerance).
"""

from __future__ import annotations

from .anomaly_map import anomaly_map
from .coreset import coreset
from .describe import DESCRIPTOR_COMPONENTS, describe
from .knn import bank_centre, knn, near_tie_bound

__all__ = [
    "DESCRIPTOR_COMPONENTS",
    "anomaly_map",
    "bank_centre",
    "coreset",
    "describe",
    "knn",
    "near_tie_bound",
]
