"""NumPy reference of :func:`structcore.kernels.knn`: one query at a time, float64."""

from __future__ import annotations

import numpy as np

from ..kernels.knn import _validate

__all__ = ["knn", "near_tie_bound"]


def knn(
    queries: object,
    bank: object,
    k: int = 1,
    *,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest bank rows of each query, written for clarity (the test oracle).

    Same signature, validation and results as :func:`structcore.kernels.knn`: for each
    query the squared distances to every bank row are accumulated in float64, the k
    smallest are taken with a stable sort (ties -> lower index) and their square roots
    are returned as float32.

    Parameters
    ----------
    queries : ndarray of shape (n_queries, dim), float32
        Query vectors (float64 / non-contiguous converted as in the kernel).
    bank : ndarray of shape (n_bank, dim), float32 or float16
        Memory bank.
    k : int, default 1
        Number of neighbours, ``1 <= k <= n_bank``.
    threads : int or None, default None
        Validated and ignored (NumPy decides).

    Returns
    -------
    distances : ndarray of shape (n_queries, k), float32
        Euclidean distances, ascending.
    indices : ndarray of shape (n_queries, k), int64
        Bank row indices, equal distances by lower index.

    Raises
    ------
    TypeError, ValueError
        As :func:`structcore.kernels.knn`.

    Examples
    --------
    >>> import numpy as np
    >>> from structcore.reference import knn
    >>> bank = np.array([[0.0, 0.0], [3.0, 4.0]], dtype=np.float32)
    >>> knn(np.array([[3.0, 4.0]], dtype=np.float32), bank, k=2)[1].tolist()
    [[1, 0]]
    """
    q, b, k, _ = _validate(queries, bank, k, threads)
    b64 = b.astype(np.float64)
    distances = np.empty((q.shape[0], k), dtype=np.float32)
    indices = np.empty((q.shape[0], k), dtype=np.int64)
    for row, query in enumerate(q.astype(np.float64)):
        d2 = ((b64 - query) ** 2).sum(axis=1)
        order = np.argsort(d2, kind="stable")[:k]
        dist = np.sqrt(d2[order])
        if (dist > np.finfo(np.float32).max).any():
            raise ValueError(
                "a distance exceeds the float32 range (inputs with magnitudes near the "
                "float32 maximum); rescale queries and bank"
            )
        distances[row] = dist
        indices[row] = order
    return distances, indices


def near_tie_bound(queries: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """Per-query bound on the squared-distance error of the kernel's selection stage.

    ``2 * gamma_{dim+2} * (|q| + max_b |b|)^2`` with ``gamma_n = n u / (1 - n u)``,
    ``u = 2**-24`` (``cpp/include/structcore/knn.hpp``): a bank row whose true squared
    distance lies within this of the k-th smallest one may be returned in its place, so
    comparisons of :func:`structcore.kernels.knn` with :func:`knn` allow this much.

    Parameters
    ----------
    queries : ndarray of shape (n_queries, dim)
    bank : ndarray of shape (n_bank, dim)

    Returns
    -------
    ndarray of shape (n_queries,), float64
        The bound, in squared units of the inputs.
    """
    q64 = np.asarray(queries, np.float64)
    b64 = np.asarray(bank, np.float64)
    n = q64.shape[1] + 2
    gamma = n * 2.0**-24 / (1 - n * 2.0**-24)
    reach = np.linalg.norm(q64, axis=1) + np.linalg.norm(b64, axis=1).max()
    return 2 * gamma * reach**2
