"""Exact Euclidean k-nearest-neighbour search (C++ kernel, validated entry point)."""

from __future__ import annotations

import numpy as np

from .._validation import as_float_array, check_int, check_threads

__all__ = ["MAX_OUTPUT_ELEMENTS", "knn"]

#: Largest ``n_queries * k`` accepted (each output is 12 bytes per element): refused before
#: allocating, query in smaller batches.
MAX_OUTPUT_ELEMENTS = 2**30


def knn(
    queries: object,
    bank: object,
    k: int = 1,
    *,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest bank rows of each query (Euclidean), PatchCore's patch score.

    Parameters
    ----------
    queries : ndarray of shape (n_queries, dim), float32
        Query vectors. float64 (or float16) input and non-contiguous arrays are converted
        once to a C-contiguous float32 copy. ``n_queries`` may be 0.
    bank : ndarray of shape (n_bank, dim), float32 or float16
        Memory bank. float16 is kept as is (half the memory; its values are converted
        exactly to float32 inside the kernel); float64 and non-contiguous arrays are
        converted once to C-contiguous float32.
    k : int, default 1
        Number of neighbours, ``1 <= k <= n_bank``.
    threads : int or None, default None
        Maximum number of OpenMP threads (None: all). Results do not depend on it.

    Returns
    -------
    distances : ndarray of shape (n_queries, k), float32
        True (not squared) Euclidean distances, ascending along each row, in the units of
        the inputs.
    indices : ndarray of shape (n_queries, k), int64
        Bank row indices; equal distances are ordered by lower index.

    Raises
    ------
    TypeError
        Integer, bool, complex or non-numeric arrays; non-integer ``k`` or ``threads``.
    ValueError
        Wrong rank, empty bank, ``dim`` mismatch or 0, ``k`` outside ``[1, n_bank]``,
        NaN or Inf values, or inputs so large (near the float32 maximum) that a distance
        overflows float32.

    Notes
    -----
    METHOD.md §2. Both arrays are first rescaled by one exact power of two (so huge and
    subnormal inputs work; only distances beyond the float32 range are rejected) and, for
    the candidate passes only, centred on the mean of <= 256 bank rows (distances are
    translation-invariant; the error of the passes below scales with the norms, which
    post-ReLU CNN features inflate ~4x with their common mean). Memory is O(tile), never
    O(n_queries x n_bank): GEMM tiles are fused with a per-query top-k.

    The path is chosen once per process from the CPU (cpuid, and for AMX the OS state and
    permission) and ``STRUCTCORE_SIMD=scalar|avx2|avx512|avx512bf16|amx``, which can only
    lower it (a level the CPU lacks falls back, with a note);
    ``structcore._core.knn_info(k)`` and :func:`structcore.build_info` say which path runs
    and why.

    * Default on CPUs with AMX-BF16 or AVX-512 BF16 (and ``k <= 64``): candidates come from a
      bf16 dot-product pass (AMX tiles, else ``vdpbf16ps``) with a proven error bound, and
      every bank row that may belong to the k nearest is re-ranked exactly (double
      accumulation): the result is the exact ranking (rows whose double-precision distances
      are equal up to rounding may trade places). The AMX kernel is compiled and tested
      against an emulation of its tiles, but has not been timed on an AMX CPU yet.
    * Elsewhere (or with ``STRUCTCORE_SIMD=avx512|avx2|scalar``): float32 norms trick
      ``|q|^2 + |b|^2 - 2 q.b`` on AVX-512 / AVX2 / scalar micro-kernels, then the k winners
      are re-evaluated exactly and re-sorted by (distance, index). A bank row whose true
      squared distance lies within ``2 * (gamma_{dim+2} + 2.01 * 2**-24) * (|q - c| + |b - c|)^2``
      (``gamma_n ~ n * 2**-24``, ``c`` the centre: :func:`structcore.reference.near_tie_bound`)
      of the k-th smallest one may be returned in its place.

    In both cases the returned distances are the exact distances of the returned rows,
    rounded once to float32. See ``cpp/include/structcore/knn.hpp`` for the bounds.
    ``n_queries == 0`` returns empty ``(0, k)`` arrays.

    Examples
    --------
    >>> import numpy as np
    >>> from structcore.kernels import knn
    >>> bank = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]], dtype=np.float32)
    >>> d, i = knn(np.array([[0.0, 0.1]], dtype=np.float32), bank, k=2)
    >>> i.tolist(), [round(float(x), 4) for x in d[0]]
    ([[0, 2]], [0.1, 1.005])
    """
    from .. import _core

    # NaN/Inf are rejected by the C++ kernel during its first (max-|value|) pass over the
    # data, with the same ValueError messages, which spares a full extra scan of the bank.
    q, b, k, n_threads = _validate(queries, bank, k, threads, check_finite=False)
    if b.dtype == np.float16:
        return _core.knn_f16(q, b.view(np.uint16), k, n_threads)
    return _core.knn(q, b, k, n_threads)


def _validate(
    queries: object, bank: object, k: object, threads: object, *, check_finite: bool = True
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Checked, converted ``(queries, bank, k, threads)`` shared with the reference."""
    b_in = bank if isinstance(bank, np.ndarray) else None
    keep_half = b_in is not None and b_in.dtype == np.float16
    dtype = np.float16 if keep_half else np.float32
    b = as_float_array(bank, "bank", ndim=2, dtype=dtype, finite=check_finite)
    q = as_float_array(queries, "queries", ndim=2, allow_empty=True, finite=check_finite)
    if q.shape[1] != b.shape[1]:
        raise ValueError(
            f"queries and bank must have the same dim; got queries {q.shape} and bank {b.shape}"
        )
    k = check_int(k, "k", low=1, high=b.shape[0])
    if q.shape[0] * k > MAX_OUTPUT_ELEMENTS:
        raise ValueError(
            f"n_queries * k = {q.shape[0]} * {k} = {q.shape[0] * k} is above the limit "
            f"MAX_OUTPUT_ELEMENTS = 2**30; query in smaller batches"
        )
    return q, b, k, check_threads(threads)
