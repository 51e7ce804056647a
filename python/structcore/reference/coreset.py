"""Placeholder for the coreset kernel (reference); its owner replaces this module."""

from __future__ import annotations

from typing import Any



def coreset(*args: Any, **kwargs: Any) -> Any:
    """Not implemented yet."""
    raise NotImplementedError("reference.coreset is not implemented yet")
