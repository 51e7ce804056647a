"""Optional tqdm progress bars (tqdm is imported only when one is shown)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["progress"]


def progress(iterable: Iterable[Any], enabled: bool, total: int, desc: str) -> Iterable[Any]:
    """``iterable``, wrapped in a transient tqdm bar of ``total`` batches when ``enabled``."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="batch", leave=False)
