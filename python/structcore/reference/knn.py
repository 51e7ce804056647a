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


def bank_centre(bank: np.ndarray) -> np.ndarray:
    """The kernel's centring vector (float64 values of float32 numbers).

    The mean of ``m = min(n_bank, 256)`` bank rows ``i * n_bank // m`` (``i < m``), in
    float64, rounded to float32 (``cpp/include/structcore/knn.hpp``, "Centring and
    scaling"; the kernel sums in row order, NumPy pairwise, so the two may differ in the last
    float32 bit: the bounds built on it carry a margin for that).
    """
    b64 = np.asarray(bank, np.float64)
    m = min(b64.shape[0], 256)
    rows = np.arange(m, dtype=np.int64) * b64.shape[0] // m
    return b64[rows].mean(axis=0).astype(np.float32).astype(np.float64)


def near_tie_bound(queries: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """Per-query bound on the squared-distance error of the kernel's selection stage.

    ``2 * (gamma_{dim+2} + 2.01 u) * (|q - c| + max_b |b - c|)^2`` with
    ``gamma_n = n u / (1 - n u)``, ``u = 2**-24`` and ``c`` the kernel's centre
    (:func:`bank_centre`; ``cpp/include/structcore/knn.hpp``; the underflow term, relevant
    only for values below ~1e-19 of the largest, is left out): a bank row whose true squared
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
    c = bank_centre(b64)
    u = 2.0**-24
    n = q64.shape[1] + 2
    gamma = n * u / (1 - n * u)
    reach = np.linalg.norm(q64 - c, axis=1) + np.linalg.norm(b64 - c, axis=1).max()
    # 1.01: the centre may differ from the kernel's by a float32 ulp (summation order)
    return 2 * (gamma + 2.01 * u) * (1.01 * reach) ** 2
