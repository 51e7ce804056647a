"""Placeholder for the coreset kernel (kernels); its owner replaces this module."""

from __future__ import annotations

from typing import Any



def coreset(*args: Any, **kwargs: Any) -> Any:
    """Not implemented yet."""
    raise NotImplementedError("kernels.coreset is not implemented yet")
