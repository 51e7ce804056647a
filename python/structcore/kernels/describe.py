"""Placeholder for the describe kernel (kernels); its owner replaces this module."""

from __future__ import annotations

from typing import Any

DESCRIPTOR_COMPONENTS: dict[str, str] = {}


def describe(*args: Any, **kwargs: Any) -> Any:
    """Not implemented yet."""
    raise NotImplementedError("kernels.describe is not implemented yet")
