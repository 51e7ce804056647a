"""Stage 3 of the detector: anomaly maps S from patch scores (METHOD.md §2).

:class:`AnomalyMapper` turns the ``(B, h, w)`` patch scores of :class:`~structcore.memory_bank
.MemoryBank.search` into ``(B, crop, crop)`` maps (bilinear upsampling to the crop, then a
Gaussian blur of ``sigma`` pixels, fused in :func:`structcore.kernels.anomaly_map`) and gives
the customary image score, max(S). The maps are the pixel-level output; no image score
changes them.
"""

from __future__ import annotations

import numpy as np

from .memory_bank import backend_module, score_maps

__all__ = ["AnomalyMapper"]


class AnomalyMapper:
    """Patch scores -> anomaly maps S and their maxima.

    Parameters
    ----------
    crop : int >= 1
        Side of the maps in pixels (the preprocessing crop: maps align with it).
    sigma : float >= 0
        Gaussian blur in pixels of the crop (0: no blur).
    backend : {"cpp", "reference"}
        Kernels: :mod:`structcore.kernels` (C++) or :mod:`structcore.reference` (NumPy).
    threads : int or None
        Thread cap of the kernel (None: all OpenMP threads).

    Examples
    --------
    >>> import numpy as np
    >>> mapper = AnomalyMapper(crop=16, sigma=2.0)
    >>> maps = mapper(np.ones((2, 4, 4), dtype=np.float32))
    >>> maps.shape, mapper.max_scores(maps).tolist()
    ((2, 16, 16), [1.0, 1.0])
    """

    def __init__(
        self, crop: int, sigma: float, *, backend: str = "cpp", threads: int | None = None
    ) -> None:
        self.crop = int(crop)
        self.sigma = float(sigma)
        self.backend = backend
        self.threads = threads
        self._kernels = backend_module(backend)

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        """Maps of patch scores.

        Parameters
        ----------
        scores : ndarray of shape (B, h, w), float32
            Patch scores (validated by the caller: finite, C-contiguous float32).

        Returns
        -------
        maps : ndarray of shape (B, crop, crop), float32
        """
        return score_maps(
            scores, self.crop, self.sigma, backend=self._kernels, threads=self.threads
        )

    @staticmethod
    def max_scores(maps: np.ndarray) -> np.ndarray:
        """max(S) of each map (METHOD.md §2's baseline image score).

        Parameters
        ----------
        maps : ndarray of shape (B, H, W), float32

        Returns
        -------
        score_max : ndarray of shape (B,), float64
        """
        return maps.reshape(maps.shape[0], -1).max(axis=1).astype(np.float64)
