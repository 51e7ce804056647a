"""The ``local`` engine: every chunk in this process, one after the other (no Ray)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["run_local"]


def run_local(
    chunks: list[list[str]],
    pending: list[int],
    *,
    threads: int,
    scorer_kwargs: dict[str, Any],
    on_stats: Callable[[dict[str, Any]], None],
) -> None:
    """Score ``pending`` chunks with one :class:`ChunkScorer` here, ``threads`` threads.

    Torch's thread count is restored afterwards.
    """
    import torch

    from ._worker import ChunkScorer

    before = torch.get_num_threads()
    try:
        scorer = ChunkScorer(threads=threads, **scorer_kwargs)
        for c in pending:
            on_stats(scorer.score_chunk(c, chunks[c]))
    finally:
        torch.set_num_threads(before)
