"""Validated entry points to the C++ kernels.

Each function checks and converts its arguments (see ``structcore._validation``), then calls
``structcore._core`` with the GIL released. Each has a NumPy twin with the same signature and
semantics in :mod:`structcore.reference`.
"""

from __future__ import annotations

from .anomaly_map import anomaly_map
from .coreset import coreset
from .describe import DESCRIPTOR_COMPONENTS, describe
from .knn import knn

__all__ = ["DESCRIPTOR_COMPONENTS", "anomaly_map", "coreset", "describe", "knn"]
