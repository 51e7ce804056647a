"""Argument checks shared by every public entry point.

One policy everywhere (see ``kernels``): arrays are validated here, at the Python boundary, so
the C++ core only ever sees C-contiguous arrays of the dtype it expects with checked sizes.

* float32 stays as is; float16 and float64 are converted once to float32 (a copy);
  integer, bool, complex and object arrays raise :class:`TypeError`.
* Wrong rank, empty arrays and non-finite values raise :class:`ValueError`.
* Every message names the argument and echoes the offending value or shape.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

__all__ = [
    "as_float_array",
    "check_choice",
    "check_int",
    "check_positive_float",
    "check_quantile",
    "check_threads",
]


def as_float_array(
    x: object,
    name: str,
    *,
    ndim: int | Sequence[int],
    dtype: type = np.float32,
    allow_empty: bool = False,
    finite: bool = True,
) -> np.ndarray:
    """Return ``x`` as a C-contiguous floating array of ``dtype`` after checking it.

    Parameters
    ----------
    x : array_like
        The user's input.
    name : str
        Argument name used in error messages.
    ndim : int or sequence of int
        Accepted ranks.
    dtype : numpy floating type
        Target dtype (float32 unless a kernel needs float64).
    allow_empty : bool
        Whether arrays with a zero-length axis are accepted.
    finite : bool
        Reject NaN and +-Inf.

    Raises
    ------
    TypeError
        Non-numeric, integer, bool or complex input.
    ValueError
        Wrong rank, empty, or non-finite values.
    """
    arr = x if isinstance(x, np.ndarray) else _to_numpy(x, name)
    if arr.dtype.kind != "f":
        raise TypeError(
            f"{name} must be a floating-point array (float32 preferred); got dtype {arr.dtype}"
        )
    ranks = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if arr.ndim not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ValueError(f"{name} must be {want}-dimensional; got shape {arr.shape}")
    if not allow_empty and arr.size == 0:
        raise ValueError(f"{name} must not be empty; got shape {arr.shape}")
    # Values beyond the float32 range become Inf here and are reported by the finiteness
    # check below as one clear ValueError (not a RuntimeWarning first).
    with np.errstate(over="ignore"):
        arr = np.ascontiguousarray(arr, dtype=dtype)
    if finite and arr.size and not np.isfinite(arr).all():
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} must be finite; found {bad} NaN or Inf value(s)")
    return arr


def _to_numpy(x: object, name: str) -> np.ndarray:
    # torch tensors and other array-likes: go through __array__ without importing torch.
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()  # type: ignore[attr-defined]
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be array-like; got {type(x).__name__}") from exc


def check_int(value: object, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as ``int`` after checking it is an integer in ``[low, high]``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {value!r} ({type(value).__name__})")
    v = int(value)
    if (low is not None and v < low) or (high is not None and v > high):
        lo = "-inf" if low is None else str(low)
        hi = "inf" if high is None else str(high)
        raise ValueError(f"{name} must be in [{lo}, {hi}]; got {v}")
    return v


def check_positive_float(value: object, name: str, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a finite ``float`` > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {value!r} ({type(value).__name__})")
    v = float(value)
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        cmp = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {cmp}; got {v!r}")
    return v


def check_threads(threads: object) -> int:
    """Return the thread cap for the C++ core: ``None`` -> 0 (all OpenMP threads), else >= 1."""
    if threads is None:
        return 0
    return check_int(threads, "threads", low=1, high=4096)


def check_choice(value: object, name: str, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ValueError listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}; got {value!r}")
    return value


def check_quantile(q: object, name: str) -> float:
    """Return ``q`` as a float after checking it is a real number in (0, 1] (not bool).

    Raises
    ------
    ValueError
        Anything else, naming ``name``.
    """
    if isinstance(q, bool) or not isinstance(q, numbers.Real) or not 0.0 < float(q) <= 1.0:
        raise ValueError(f"{name} must be in (0, 1]; got {q!r}")
    return float(q)
