"""Stage 2 of the detector, PatchCore's memory bank: coreset selection and patch scores.

:class:`MemoryBank` is the stage (``features -> bank -> patch scores``); the free functions
below are its steps. Thin glue between patch features (:mod:`structcore.features`) and the
kernels; the heavy
lifting happens in :func:`structcore.kernels.coreset`, :func:`~structcore.kernels.knn` and
:func:`~structcore.kernels.anomaly_map` (``backend="cpp"``) or their NumPy twins in
:mod:`structcore.reference` (``backend="reference"``). METHOD.md §1.3 and §2.

* Bank size: ``max(1, round(coreset_ratio * n_patches))`` rows (all patches when that is
  ``n_patches``; then no selection runs and the bank keeps the input order).
* Patch score: Euclidean distance to the nearest bank vector; with ``k > 1`` the mean of the
  ``k`` smallest distances.
* Map: :func:`~structcore.kernels.anomaly_map` (bilinear upsampling of the patch grid to the
  crop size, then a Gaussian blur of ``sigma`` pixels).
* Reweighting (optional; PatchCore's paper, eq. 7): with ``m*`` the bank vector nearest to
  the test patch ``m_test`` with the highest patch score and ``N_b(m*)`` the ``b`` bank
  vectors nearest to ``m*`` (``m*`` itself included, ``b = REWEIGHT_NEIGHBORS = 9`` as in
  anomalib), the image score is multiplied by
  ``w = 1 - exp(||m_test - m*||) / sum_{m in N_b(m*)} exp(||m_test - m||)``.
  The paper reweights the patch-level maximum; here the weight multiplies max(S) of the
  final map (METHOD.md §2's baseline), computed at the patch with the highest patch score.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np

from ._validation import check_choice

__all__ = [
    "REWEIGHT_NEIGHBORS",
    "MemoryBank",
    "backend_module",
    "bank_size",
    "patch_scores",
    "reweight_factors",
    "score_maps",
    "select_bank",
]

#: Number of bank neighbours of ``m*`` in PatchCore's reweighting (anomalib's default).
REWEIGHT_NEIGHBORS = 9


def backend_module(backend: str) -> ModuleType:
    """The kernel module for ``backend``: ``"cpp"`` -> :mod:`structcore.kernels`,
    ``"reference"`` -> :mod:`structcore.reference`."""
    check_choice(backend, "backend", ("cpp", "reference"))
    name = "structcore.kernels" if backend == "cpp" else "structcore.reference"
    return importlib.import_module(name)


def bank_size(n_patches: int, ratio: float) -> int:
    """Rows kept by the coreset: ``max(1, round(ratio * n_patches))``, at most ``n_patches``."""
    return int(min(n_patches, max(1, round(ratio * n_patches))))


def select_bank(
    features: np.ndarray,
    ratio: float,
    *,
    projection_dim: int | None,
    seed: int,
    backend: ModuleType,
    threads: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Select the memory bank from all train patch features (greedy coreset, METHOD.md §1.3).

    Parameters
    ----------
    features : ndarray of shape (n_patches, dim), float32
        Patch features of the train images, flattened.
    ratio : float in (0, 1]
        Coreset ratio: :func:`bank_size` rows are kept.
    projection_dim : int or None
        Dimension of the coreset's random projection (None: no projection).
    seed : int
        Coreset seed.
    backend : module
        :mod:`structcore.kernels` or :mod:`structcore.reference`.
    threads : int or None
        Thread cap of the kernel.

    Returns
    -------
    bank : ndarray of shape (n_bank, dim), float32
        The selected rows in selection order (a copy).
    rows : ndarray of shape (n_bank,), int64
        ``bank[i] == features[rows[i]]`` (``arange`` when every patch is kept).
    """
    n = bank_size(features.shape[0], ratio)
    if n == features.shape[0]:
        rows = np.arange(n, dtype=np.int64)
        return np.ascontiguousarray(features, dtype=np.float32).copy(), rows
    idx = backend.coreset(features, n, projection_dim=projection_dim, seed=seed, threads=threads)
    rows = np.asarray(idx, dtype=np.int64)
    return np.ascontiguousarray(features[rows], dtype=np.float32), rows


def patch_scores(
    features: np.ndarray, bank: np.ndarray, k: int, *, backend: ModuleType, threads: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour patch scores of a batch of feature grids.

    Parameters
    ----------
    features : ndarray of shape (B, h, w, dim), float32
    bank : ndarray of shape (n_bank, dim), float32
    k : int
        Neighbours averaged (``1 <= k <= n_bank``).

    Returns
    -------
    scores : ndarray of shape (B, h, w), float32
        Distance to the nearest bank vector (mean of the ``k`` nearest).
    nearest : ndarray of shape (B, h, w), int64
        Index of the nearest bank vector.
    """
    b, h, w, d = features.shape
    dist, idx = backend.knn(features.reshape(b * h * w, d), bank, k, threads=threads)
    dist = np.asarray(dist, dtype=np.float32)
    scores = dist[:, 0] if k == 1 else dist.mean(axis=1, dtype=np.float32)
    nearest = np.asarray(idx, dtype=np.int64)[:, 0]
    return scores.reshape(b, h, w), nearest.reshape(b, h, w)


def score_maps(
    scores: np.ndarray,
    size: int,
    sigma: float,
    *,
    backend: ModuleType,
    threads: int | None,
) -> np.ndarray:
    """Anomaly maps S: ``(B, h, w)`` patch scores -> ``(B, size, size)`` float32 maps."""
    return np.asarray(
        backend.anomaly_map(scores, size, sigma=sigma, threads=threads), dtype=np.float32
    )


def reweight_factors(
    features: np.ndarray,
    scores: np.ndarray,
    nearest: np.ndarray,
    bank: np.ndarray,
    *,
    backend: ModuleType,
    threads: int | None,
) -> np.ndarray:
    """PatchCore's density reweighting factor per image (module docstring, eq. 7).

    Parameters
    ----------
    features : ndarray of shape (B, h, w, dim), float32
    scores : ndarray of shape (B, h, w), float32
        Patch scores (:func:`patch_scores`).
    nearest : ndarray of shape (B, h, w), int64
        Nearest bank index of each patch.
    bank : ndarray of shape (n_bank, dim), float32

    Returns
    -------
    weights : ndarray of shape (B,), float64
        In ``[0, 1)``; multiply the image's max score by it.
    """
    b, h, w, d = features.shape
    flat = scores.reshape(b, h * w)
    arg = np.argmax(flat, axis=1)  # first maximum on ties
    m_test = features.reshape(b, h * w, d)[np.arange(b), arg]  # (B, dim)
    m_star = bank[nearest.reshape(b, h * w)[np.arange(b), arg]]  # (B, dim)
    nb = min(REWEIGHT_NEIGHBORS, bank.shape[0])
    _, support = backend.knn(m_star, bank, nb, threads=threads)  # (B, nb), m* first
    support = np.asarray(support, dtype=np.int64)
    diff = m_test[:, None, :].astype(np.float64) - bank[support].astype(np.float64)
    dist = np.sqrt(np.sum(diff * diff, axis=2))  # (B, nb)
    # the distance to m* itself, computed the same way (robust to ties in `support`)
    d_star = np.sqrt(np.sum((m_test.astype(np.float64) - m_star.astype(np.float64)) ** 2, axis=1))
    shift = dist.max(axis=1, keepdims=True)  # softmax-style stabilisation, cancels exactly
    denom = np.exp(dist - shift).sum(axis=1)
    return 1.0 - np.exp(d_star - shift[:, 0]) / denom


class MemoryBank:
    """The memory bank stage: a coreset of train patches and exact kNN patch scores.

    Build it with :meth:`build` (greedy coreset of all train patch features, METHOD.md §1.3)
    or wrap given vectors; :meth:`search` then scores feature grids (METHOD.md §2).

    Parameters
    ----------
    vectors : ndarray of shape (n_bank, dim), float32
        The bank rows (kept as given: C-contiguous float32, finite; the caller validates).
    backend : {"cpp", "reference"}
        Kernels: :mod:`structcore.kernels` (C++) or :mod:`structcore.reference` (NumPy).
    threads : int or None
        Thread cap of the kernels (None: all OpenMP threads).

    sources : ndarray of shape (n_bank,), int64, or None
        The train image each row was selected from (set by :meth:`build`; None when the
        vectors were given). Cross-fitting uses it to drop a fold's own rows.

    Attributes
    ----------
    vectors : ndarray of shape (n_bank, dim), float32
    sources : ndarray of shape (n_bank,), int64, or None

    Examples
    --------
    >>> import numpy as np
    >>> feats = np.random.default_rng(0).normal(size=(2, 4, 4, 8)).astype(np.float32)
    >>> bank = MemoryBank.build(feats, 0.5, projection_dim=None, seed=0)
    >>> len(bank), bank.dim
    (16, 8)
    >>> scores, nearest = bank.search(feats, k=1)
    >>> scores.shape, float(scores.max()) < 1e-3
    ((2, 4, 4), True)
    """

    def __init__(
        self,
        vectors: np.ndarray,
        *,
        backend: str = "cpp",
        threads: int | None = None,
        sources: np.ndarray | None = None,
    ) -> None:
        self.vectors = vectors
        self.sources = sources
        self.backend = backend
        self.threads = threads
        self._kernels = backend_module(backend)

    @classmethod
    def build(
        cls,
        features: np.ndarray,
        ratio: float,
        *,
        projection_dim: int | None,
        seed: int,
        backend: str = "cpp",
        threads: int | None = None,
    ) -> MemoryBank:
        """Select the bank from train patch features (:func:`select_bank`).

        Parameters
        ----------
        features : ndarray of shape (N, h, w, dim), float32
            Patch features of N train images (validated by the caller).
        ratio : float in (0, 1]
            Coreset ratio: ``max(1, round(ratio * n_patches))`` rows are kept.
        projection_dim : int or None
            Dimension of the coreset's seeded random projection (None: none).
        seed : int
            Coreset seed.
        backend, threads
            As the constructor.

        Returns
        -------
        bank : MemoryBank
        """
        flat = features.reshape(-1, features.shape[-1])
        vectors, rows = select_bank(
            flat,
            ratio,
            projection_dim=projection_dim,
            seed=seed,
            backend=backend_module(backend),
            threads=threads,
        )
        per_image = flat.shape[0] // max(1, features.shape[0])
        return cls(vectors, backend=backend, threads=threads, sources=rows // per_image)

    def without_images(self, images: np.ndarray) -> MemoryBank:
        """This bank without the rows selected from ``images`` (a copy of the rest).

        Parameters
        ----------
        images : ndarray of int
            Train image indices (as given to :meth:`build`).

        Returns
        -------
        bank : MemoryBank
            The remaining rows in the same order, same backend and threads.

        Raises
        ------
        ValueError
            The bank has no ``sources`` (it was not built by :meth:`build`).
        """
        if self.sources is None:
            raise ValueError("without_images needs a bank built by MemoryBank.build (sources)")
        keep = ~np.isin(self.sources, images)
        return MemoryBank(
            np.ascontiguousarray(self.vectors[keep]),
            backend=self.backend,
            threads=self.threads,
            sources=self.sources[keep],
        )

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        """Dimension of a bank vector."""
        return int(self.vectors.shape[1])

    def search(self, features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Patch scores of feature grids: :func:`patch_scores` against this bank.

        Parameters
        ----------
        features : ndarray of shape (B, h, w, dim), float32
        k : int
            Neighbours averaged into a patch score (``1 <= k <= len(self)``).

        Returns
        -------
        scores : ndarray of shape (B, h, w), float32
            Euclidean distance to the nearest bank vector (mean of the ``k`` nearest).
        nearest : ndarray of shape (B, h, w), int64
            Row of the nearest bank vector.
        """
        return patch_scores(features, self.vectors, k, backend=self._kernels, threads=self.threads)

    def reweight(self, features: np.ndarray, scores: np.ndarray, nearest: np.ndarray) -> np.ndarray:
        """PatchCore's density reweighting factor of each image (:func:`reweight_factors`).

        Parameters
        ----------
        features : ndarray of shape (B, h, w, dim), float32
        scores, nearest : ndarray of shape (B, h, w)
            What :meth:`search` returned for ``features``.

        Returns
        -------
        weights : ndarray of shape (B,), float64
            In ``[0, 1)``; multiply the image's max score by it.
        """
        return reweight_factors(
            features, scores, nearest, self.vectors, backend=self._kernels, threads=self.threads
        )
