"""Coverage-guided fuzzing (atheris / libFuzzer) of the kernel entry points.

    python fuzz/fuzz_kernels.py -max_total_time=60

Each input is decoded (``atheris.FuzzedDataProvider``) into a kernel choice, an array (dtype,
rank, shape, layout, raw bytes: any float bit pattern, NaN, Inf and denormals included) and
the scalar arguments. The validated kernel (``structcore.kernels.K``) must raise TypeError,
ValueError or MemoryError, or return what the NumPy reference returns. Python code of the
package is coverage-instrumented; the C++ core is not (that needs clang's
``-fsanitize=fuzzer``), but any memory error in it still crashes the run, and running this
harness under the sanitizer build (see ``.ci/sanitize``) turns silent corruption into reports.
"""

from __future__ import annotations

import sys
import warnings

import atheris

from _common import run

with atheris.instrument_imports(include=["structcore"]):
    from structcore import kernels, reference
    from structcore.kernels.describe import EXTENDED_COMPONENTS

import numpy as np

CLEAR = (TypeError, ValueError, MemoryError)
DTYPES = [np.float32, np.float32, np.float64, np.float16, np.int32, np.uint8, np.bool_]
COMPONENTS = [*EXTENDED_COMPONENTS, "q95", "q:0.5", "q0.5", "bad"]


def _array(fdp: atheris.FuzzedDataProvider, rank: int) -> np.ndarray:
    dtype = np.dtype(DTYPES[fdp.ConsumeIntInRange(0, len(DTYPES) - 1)])
    shape = tuple(fdp.ConsumeIntInRange(0, 6) for _ in range(rank))
    n = int(np.prod(shape))
    raw = fdp.ConsumeBytes(n * dtype.itemsize).ljust(n * dtype.itemsize, b"\0")
    arr = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    layout = fdp.ConsumeIntInRange(0, 2)
    if layout == 1:
        arr = np.asfortranarray(arr)
    elif layout == 2 and arr.ndim:
        arr = arr[::-1]
    return arr


def _rank(fdp: atheris.FuzzedDataProvider, want: int) -> int:
    return want if fdp.ConsumeIntInRange(0, 4) else fdp.ConsumeIntInRange(0, 4)


def _close(got: object, want: object, exact: bool = False) -> None:
    for g, w in zip(
        got if isinstance(got, tuple) else (got,),
        want if isinstance(want, tuple) else (want,),
        strict=True,
    ):
        assert g.shape == w.shape, (g.shape, w.shape)
        if exact:
            np.testing.assert_array_equal(g, w)
        else:
            scale = float(np.max(np.abs(w))) if w.size else 0.0
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * scale + 1e-30)


def knn_close(q: np.ndarray, b: np.ndarray, got: np.ndarray, want: np.ndarray) -> None:
    """Distances agree up to knn.hpp's near-tie bound (reference.near_tie_bound), with a
    factor 2 of slack."""
    tol = 2 * reference.near_tie_bound(q, b)
    g2 = got.astype(np.float64) ** 2
    w2 = want.astype(np.float64) ** 2
    excess = np.abs(g2 - w2) - tol[:, None] - 1e-6 * w2
    assert (excess <= 0).all(), (got, want, tol)


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    which = fdp.ConsumeIntInRange(0, 3)
    threads = [None, 1, 2][fdp.ConsumeIntInRange(0, 2)]
    exact = False
    if which == 0:
        q, b = _array(fdp, _rank(fdp, 2)), _array(fdp, _rank(fdp, 2))
        k = fdp.ConsumeIntInRange(-1, 8)

        def fast():
            return kernels.knn(q, b, k, threads=threads)

        def slow():
            return reference.knn(q, b, k, threads=threads)

    elif which == 1:
        x = _array(fdp, _rank(fdp, 2))
        n = fdp.ConsumeIntInRange(-1, 8)
        pdim = [None, 1, 2, 4, 0][fdp.ConsumeIntInRange(0, 4)]
        exact = True

        def fast():
            return kernels.coreset(x, n, projection_dim=pdim, threads=threads)

        def slow():
            return reference.coreset(x, n, projection_dim=pdim, threads=threads)

    elif which == 2:
        s = _array(fdp, _rank(fdp, 3))
        size = (fdp.ConsumeIntInRange(-1, 40), fdp.ConsumeIntInRange(-1, 40))
        sigma = fdp.ConsumeRegularFloat() if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 8)

        def fast():
            return kernels.anomaly_map(s, size, sigma=sigma, threads=threads)

        def slow():
            return reference.anomaly_map(s, size, sigma=sigma, threads=threads)

    else:
        m = _array(fdp, _rank(fdp, 3))
        comps = [
            COMPONENTS[fdp.ConsumeIntInRange(0, len(COMPONENTS) - 1)]
            for _ in range(fdp.ConsumeIntInRange(0, 5))
        ]
        t = fdp.ConsumeRegularFloat() if fdp.ConsumeBool() else None
        conn = [4, 8, 6][fdp.ConsumeIntInRange(0, 2)]
        ratio = [0.01, 1.0, 0.0, 0.5][fdp.ConsumeIntInRange(0, 3)]

        def fast():
            return kernels.describe(
                m, comps, top_ratio=ratio, threshold=t, connectivity=conn, threads=threads
            )

        def slow():
            return reference.describe(
                m, comps, top_ratio=ratio, threshold=t, connectivity=conn, threads=threads
            )

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # float64 -> float32 overflow
            got = fast()
    except CLEAR:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = slow()
    if which == 0:
        if got[0].size:  # indices may differ on near-ties (knn.hpp's bound)
            knn_close(q, b, got[0], want[0])
    elif which == 3:
        assert np.isfinite(got).all(), "describe returned NaN/Inf"
    else:
        _close(got, want, exact=exact)


def main() -> None:
    run(sys.argv, TestOneInput)


if __name__ == "__main__":
    main()
