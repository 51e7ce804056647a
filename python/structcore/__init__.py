"""structcore: C++-accelerated memory-bank anomaly detection with structure-aware image scores.

The public API:

* kernels (C++, validated here): :func:`knn`, :func:`coreset`, :func:`anomaly_map`,
  :func:`describe` and :data:`DESCRIPTOR_COMPONENTS`;
* their NumPy oracles: :mod:`structcore.reference`;
* the detector: :class:`Detector` (imported lazily, it needs torch).

See ``docs/METHOD.md`` in the project for the method this implements.
"""

from __future__ import annotations

from importlib import metadata as _metadata
from typing import Any

from .kernels import DESCRIPTOR_COMPONENTS, anomaly_map, coreset, describe, knn

try:
    __version__ = _metadata.version("structcore")
except _metadata.PackageNotFoundError:  # running from a source tree (PYTHONPATH=python)
    __version__ = "0+unknown"

__all__ = [
    "DESCRIPTOR_COMPONENTS",
    "Detector",
    "Prediction",
    "Scorer",
    "__version__",
    "anomaly_map",
    "build_info",
    "coreset",
    "describe",
    "knn",
]


def build_info() -> str:
    """Describe the compiled core: version, compiler, build type, OpenMP and SIMD level."""
    from . import _core

    return str(_core.build_info())


def __getattr__(name: str) -> Any:
    # The detector pulls in torch (seconds to import); kernel users should not pay for it.
    if name in ("Detector", "Prediction"):
        from . import detector

        return getattr(detector, name)
    if name == "Scorer":
        from .scorer import Scorer

        return Scorer
    raise AttributeError(f"module 'structcore' has no attribute {name!r}")
