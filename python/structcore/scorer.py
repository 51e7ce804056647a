"""Scoring patch features with the C++ core alone: :class:`Scorer` (``structcore::Scorer``).

A :class:`Scorer` loads a model file written by :meth:`structcore.Detector.save` with the
C++ reader (no torch, no pickle; the same code that C++ and C programs use, see
``docs/CPP.md``) and turns patch features into the outputs of
:meth:`structcore.Detector.predict`. It is what inspection software does with an exported
feature extractor (:mod:`structcore.export`): run the extractor on preprocessed images, pass
its ``(B, h, w, dim)`` output grid here.

For the same features the results equal ``Detector.predict`` (the same kernels; float64
reductions in NumPy's pairwise order), within 1e-5 relative and in practice bit for bit.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from . import _core
from ._validation import as_float_array, check_threads
from .prediction import Prediction

__all__ = ["Scorer"]


class Scorer:
    """A saved detector loaded by the C++ core, scoring patch features.

    Parameters
    ----------
    path : str or path-like
        A file written by :meth:`structcore.Detector.save`.

    Attributes
    ----------
    info : dict
        What the file says about itself: ``backbone``, ``layers``, ``weights_sha256``,
        ``resize``, ``crop``, ``feature_dim``, ``feature_grid`` (h, w), ``n_bank``, ``k``,
        ``sigma``, ``reweight``, ``components``, ``norm``, ``calibration``, ``mu``,
        ``sigma_phi``, ``lambda``, ``weights`` (the learned weights of a
        ``calibration="synthetic"`` model, else empty), ``decision_threshold``,
        ``pixel_threshold``, ``top_ratio``, ``connectivity``, ``n_train``, ``format_version``,
        ``metadata_json`` (verbatim).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    OSError
        The file cannot be read.
    ValueError
        Truncated, tampered (checksum), compressed, wrong-format/version or inconsistent file;
        the message says which.

    Examples
    --------
    >>> import numpy as np
    >>> from structcore import Detector
    >>> from structcore.scorer import Scorer
    >>> rng = np.random.default_rng(0)
    >>> train = rng.integers(100, 140, size=(6, 40, 40, 3), dtype=np.uint8)
    >>> det = Detector("resnet18", weights=None, dim=32, resize=32, crop=32, folds=2).fit(train)
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
    >>> det.save(path)
    >>> scorer = Scorer(path)
    >>> scorer.feature_grid, scorer.feature_dim
    ((4, 4), 32)
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        p = os.fspath(path)
        if not isinstance(p, str):
            raise TypeError(f"path must be a str or path-like; got {type(path).__name__}")
        if not os.path.isfile(p):
            raise FileNotFoundError(f"detector file not found: {p!r}")
        self._impl = _core.Scorer(p)
        self.info: dict[str, Any] = dict(self._impl.info)

    @classmethod
    def from_bytes(cls, data: bytes) -> Scorer:
        """Load a model from the bytes of a model file (e.g. read from a database).

        Parameters
        ----------
        data : bytes
            The file's content.

        Returns
        -------
        Scorer
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes; got {type(data).__name__}")
        obj = cls.__new__(cls)
        obj._impl = _core.Scorer.from_bytes(bytes(data))
        obj.info = dict(obj._impl.info)
        return obj

    @property
    def feature_grid(self) -> tuple[int, int]:
        """Patch grid ``(h, w)`` of one image that :meth:`score_features` expects."""
        h, w = self.info["feature_grid"]
        return int(h), int(w)

    @property
    def feature_dim(self) -> int:
        """Length of one patch feature vector."""
        return int(self.info["feature_dim"])

    def score_features(self, features: object, threads: int | None = None) -> Prediction:
        """Score patch-feature grids: maps, max, structural distance, score and decision.

        Parameters
        ----------
        features : array_like of shape (B, h, w, dim) or (h, w, dim), float32
            Patch features (the feature extractor's output; ``(h, w)`` = :attr:`feature_grid`,
            ``dim`` = :attr:`feature_dim`). float64 is converted to float32, non-contiguous
            input copied; must be finite. Torch tensors are accepted.
        threads : int or None
            OpenMP threads of the C++ kernels (None: all). Results do not depend on it.

        Returns
        -------
        Prediction
            As :meth:`structcore.Detector.predict` (``timings`` has one key, ``"score"``).

        Raises
        ------
        TypeError
            Non-float features.
        ValueError
            Wrong rank, empty, non-finite, or a grid / dim that differs from the model's.
        """
        arr = as_float_array(features, "features", ndim=(3, 4))
        if arr.ndim == 3:
            arr = arr[None]
        grid, dim = self.feature_grid, self.feature_dim
        if arr.shape[1:3] != grid or arr.shape[3] != dim:
            raise ValueError(
                f"features must have shape (B, {grid[0]}, {grid[1]}, {dim}) for this model "
                f"(backbone {self.info['backbone']!r} at crop {self.info['crop']} px); "
                f"got {arr.shape}"
            )
        n_threads = check_threads(threads)
        t0 = time.perf_counter()
        r = self._impl.score(arr, n_threads)
        timings = {"score": time.perf_counter() - t0}
        return Prediction(
            np.asarray(r["maps"]),
            np.asarray(r["score_max"]),
            np.asarray(r["score_struct"]),
            np.asarray(r["score"]),
            np.asarray(r["descriptor"]),
            np.asarray(r["z"]),
            np.asarray(r["is_anomalous"]),
            timings,
        )

    def __repr__(self) -> str:
        h, w = self.feature_grid
        return (
            f"Scorer(backbone={self.info['backbone']!r}, grid=({h}, {w}), "
            f"dim={self.feature_dim}, crop={self.info['crop']}, bank={self.info['n_bank']})"
        )
