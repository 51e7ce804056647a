"""Placeholder for the knn kernel (kernels); its owner replaces this module."""

from __future__ import annotations

from typing import Any



def knn(*args: Any, **kwargs: Any) -> Any:
    """Not implemented yet."""
    raise NotImplementedError("kernels.knn is not implemented yet")
