"""Placeholder for the anomaly_map kernel (kernels); its owner replaces this module."""

from __future__ import annotations

from typing import Any



def anomaly_map(*args: Any, **kwargs: Any) -> Any:
    """Not implemented yet."""
    raise NotImplementedError("kernels.anomaly_map is not implemented yet")
