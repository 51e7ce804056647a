"""Property fuzzing of every public kernel and of the private bindings.

Each example builds an arbitrary argument (dtype, rank, shape, strides, NaN/Inf/denormal/huge
values, empty and 1-element arrays) and asserts that the call either raises a clear Python
exception (TypeError, ValueError, MemoryError) or returns what the NumPy reference returns.
The private ``_core`` functions get arrays of the right dtype and layout with arbitrary sizes
and scalar arguments: they must raise ValueError, never crash (the sanitizer build runs this
file too, see ``.ci/sanitize``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from structcore import _core, kernels, reference
from structcore.kernels.describe import EXTENDED_COMPONENTS

CLEAR = (TypeError, ValueError, MemoryError)
SPECIAL = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    np.nan,
    np.inf,
    -np.inf,
    1e-40,  # float32 denormal
    -1e-45,
    5e-324,  # float64 denormal
    3.0e38,
    -3.4e38,
    1e300,
    65504.0,
    1e-8,
]
DTYPES = [
    np.float32,
    np.float32,
    np.float32,
    np.float64,
    np.float16,
    np.int32,
    np.uint8,
    np.bool_,
    np.complex64,
]
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def arrays(draw, ndim: int | None = None, max_side: int = 7, special: float = 0.15):
    """An arbitrary array: dtype, rank, shape, values (with specials), layout."""
    dtype = draw(st.sampled_from(DTYPES))
    rank = draw(st.integers(0, 4)) if ndim is None else ndim
    shape = tuple(draw(st.integers(0, max_side)) for _ in range(rank))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1.0, 1e-30, 1e-3, 1e3, 1e30]))
    base = rng.standard_normal(shape) * scale
    if base.size and draw(st.booleans()):
        mask = rng.random(shape) < special
        picks = rng.choice(np.array(SPECIAL), size=shape)
        base = np.where(mask, picks, base)
    if draw(st.booleans()) and base.size:
        base = np.abs(base)
    with np.errstate(all="ignore"):
        arr = base.astype(dtype) if dtype is not np.bool_ else base > 0
    layout = draw(st.sampled_from(["c", "c", "f", "step", "neg"]))
    if layout == "f":
        arr = np.asfortranarray(arr)
    elif layout == "step" and arr.ndim:
        arr = np.repeat(arr, 2, axis=0)[::2]
    elif layout == "neg" and arr.ndim:
        arr = arr[::-1]
    return arr


def _finite_float(a: object) -> bool:
    return (
        isinstance(a, np.ndarray)
        and a.dtype.kind == "f"
        and bool(np.isfinite(a.astype(np.float64)).all())
    )


def knn_close(q: np.ndarray, b: np.ndarray, got: np.ndarray, want: np.ndarray) -> None:
    """Distances agree up to knn.hpp's near-tie bound (reference.near_tie_bound), with a
    factor 2 of slack."""
    tol = 2 * reference.near_tie_bound(q, b)
    g2 = got.astype(np.float64) ** 2
    w2 = want.astype(np.float64) ** 2
    excess = np.abs(g2 - w2) - tol[:, None] - 1e-6 * w2
    assert (excess <= 0).all(), (got, want, tol)


def _same_or_clear(fast, slow, compare) -> str:
    """Run the kernel; if it returns, the reference must return the same."""
    try:
        with warnings.catch_warnings():
            # Known: float64 input beyond the float32 range warns while being cast (see
            # test_float64_beyond_float32_range_is_one_clear_error); the cast gives Inf, which
            # is then refused with a ValueError.
            warnings.filterwarnings("ignore", "overflow encountered in cast", RuntimeWarning)
            got = fast()
    except CLEAR as exc:
        assert str(exc), "exceptions must carry a message"
        event(f"raised {type(exc).__name__}")
        return "raised"
    want = slow()
    compare(got, want)
    event("returned, equal to the reference")
    return "returned"


# --------------------------------------------------------------------------------------------
# public kernels vs the references


@FUZZ
@given(
    queries=st.one_of(arrays(ndim=2), arrays(ndim=2), arrays(ndim=None)),
    bank=st.one_of(arrays(ndim=2), arrays(ndim=2), arrays(ndim=None)),
    k=st.one_of(st.integers(-2, 9), st.just(2**40), st.floats(1, 3), st.none()),
    threads=st.sampled_from([None, 1, 2, 0, -1]),
)
def test_fuzz_knn(queries, bank, k, threads) -> None:
    def compare(got, want):
        (d, i), (rd, _) = got, want
        assert d.shape == rd.shape == i.shape and d.dtype == np.float32 and i.dtype == np.int64
        if d.size:
            knn_close(queries, bank, d, rd)
        if i.size:
            assert i.min() >= 0 and i.max() < bank.shape[0]

    _same_or_clear(
        lambda: kernels.knn(queries, bank, k, threads=threads),
        lambda: reference.knn(queries, bank, k, threads=threads),
        compare,
    )


@FUZZ
@given(
    features=st.one_of(arrays(ndim=2), arrays(ndim=2), arrays(ndim=None)),
    n=st.one_of(st.integers(-1, 9), st.just(2**40), st.none()),
    projection_dim=st.sampled_from([None, 1, 2, 3, 128, 0, -1]),
    seed=st.sampled_from([0, 1, 2**40, -1]),
    threads=st.sampled_from([None, 1, 2, 0]),
)
def test_fuzz_coreset(features, n, projection_dim, seed, threads) -> None:
    def compare(got, want):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == np.int64 and len(set(got.tolist())) == len(got)

    _same_or_clear(
        lambda: kernels.coreset(
            features, n, projection_dim=projection_dim, seed=seed, threads=threads
        ),
        lambda: reference.coreset(
            features, n, projection_dim=projection_dim, seed=seed, threads=threads
        ),
        compare,
    )


@FUZZ
@given(
    scores=st.one_of(arrays(ndim=3), arrays(ndim=2), arrays(ndim=None)),
    size=st.one_of(
        st.integers(-1, 40),
        st.tuples(st.integers(0, 30), st.integers(0, 30)),
        st.just(10**6),
        st.just((16385, 2)),  # a side over MAX_SIDE
        st.just((2, 16384)),
        st.just(2.5),
    ),
    sigma=st.one_of(st.sampled_from([0.0, 0.1, 1.0, 4.0, 1e3, 1e4, -1.0, np.nan, np.inf])),
    threads=st.sampled_from([None, 1, 2]),
)
def test_fuzz_anomaly_map(scores, size, sigma, threads) -> None:
    def compare(got, want):
        assert got.shape == want.shape and got.dtype == np.float32
        scale = float(np.max(np.abs(want))) if want.size else 0.0
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6 * scale + 1e-37)

    _same_or_clear(
        lambda: kernels.anomaly_map(scores, size, sigma=sigma, threads=threads),
        lambda: reference.anomaly_map(scores, size, sigma=sigma, threads=threads),
        compare,
    )


ROBUST = ["max", "min", "mean", "q50", "q:0", "q:1", "top_mean", "cc_count", "cc_total_area"]


@FUZZ
@given(
    maps=st.one_of(arrays(ndim=3, max_side=9), arrays(ndim=2, max_side=9), arrays(ndim=None)),
    components=st.one_of(
        st.just(ROBUST),
        st.lists(
            st.sampled_from([*EXTENDED_COMPONENTS, "q95", "q:0.5", "nope", "q0.5"]),
            min_size=0,
            max_size=6,
        ),
        st.just("std"),
        st.just([3]),
    ),
    top_ratio=st.sampled_from([0.01, 1.0, 1e-9, 0.0, 2.0, np.nan]),
    threshold=st.one_of(st.none(), st.sampled_from([0.0, 0.5, -1e30, 1e30, np.nan, np.inf])),
    connectivity=st.sampled_from([4, 8, 6]),
    threads=st.sampled_from([None, 1, 2]),
)
def test_fuzz_describe(maps, components, top_ratio, threshold, connectivity, threads) -> None:
    def compare(got, want):
        assert got.shape == want.shape and got.dtype == np.float64
        assert np.isfinite(got).all(), "describe never returns NaN"
        if components is ROBUST:
            scale = float(np.max(np.abs(np.asarray(maps, dtype=np.float64))))
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * scale)

    _same_or_clear(
        lambda: kernels.describe(
            maps,
            components,
            top_ratio=top_ratio,
            threshold=threshold,
            connectivity=connectivity,
            threads=threads,
        ),
        lambda: reference.describe(
            maps,
            components,
            top_ratio=top_ratio,
            threshold=threshold,
            connectivity=connectivity,
            threads=threads,
        ),
        compare,
    )


def test_float64_beyond_float32_range_is_one_clear_error() -> None:
    x = np.array([[1e300, 0.0]])
    with pytest.raises(ValueError, match=r"finite|float32"):
        kernels.knn(x, np.ones((2, 2), np.float32))


def test_describe_huge_threshold_is_refused_not_nan() -> None:
    """atheris finding: t = -1.8e308 made the masses overflow (centroid Inf/Inf = NaN)."""
    maps = np.array([[[1.14e20, 1.2e-13]]], np.float32)
    for t in (-1.7976931348623157e308, 1e300, 2.0**129):
        with pytest.raises(ValueError, match="2\\*\\*128"):
            kernels.describe(maps, ["centroid_y", "mu20"], threshold=t)
        codes = np.array([9, 11], np.int32)
        with pytest.raises(ValueError, match="2\\*\\*128"):
            _core.describe(maps, codes, np.zeros(2), 1, t, 8, 1)
    edge = kernels.describe(maps, ["centroid_y", "mu20", "cc_total_mass"], threshold=-(2.0**128))
    assert np.isfinite(edge).all()
    assert kernels.describe(maps, ["max"], threshold=1e300).tolist() == [[float(maps.max())]]


# --------------------------------------------------------------------------------------------
# the private bindings: right dtype and layout, arbitrary sizes and scalars -> ValueError only


def _f32(draw, ndim: int, max_side: int = 6) -> np.ndarray:
    shape = tuple(draw(st.integers(0, max_side)) for _ in range(ndim))
    seed = draw(st.integers(0, 2**31))
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


BIG_INTS = st.sampled_from([-(2**62), -1, 0, 1, 2, 3, 7, 2**31, 2**62])


@FUZZ
@given(data=st.data())
def test_fuzz_core_bindings(data) -> None:
    draw = data.draw
    which = draw(
        st.sampled_from(["knn", "knn_f16", "coreset", "coreset_f16", "map", "map_into", "describe"])
    )
    try:
        if which in ("knn", "knn_f16"):
            q = _f32(draw, draw(st.integers(1, 3)))
            b = _f32(draw, draw(st.integers(1, 3)))
            if which == "knn_f16":
                b = b.astype(np.float16).view(np.uint16)
            k = draw(BIG_INTS)
            level = draw(st.sampled_from(["", "scalar", "avx2", "avx512", "sse"]))
            getattr(_core, which)(q, b, k, draw(st.sampled_from([0, 1, 2, -5])), level)
        elif which in ("coreset", "coreset_f16"):
            p = _f32(draw, draw(st.integers(1, 3))) * 100
            if which == "coreset_f16":
                p = p.astype(np.float16).view(np.uint16)
            out = getattr(_core, which)(p, draw(BIG_INTS), draw(BIG_INTS), draw(BIG_INTS) % 4)
            assert len(set(out.tolist())) == len(out)
        elif which == "map":
            s = _f32(draw, draw(st.integers(1, 4)))
            h, w = draw(BIG_INTS), draw(BIG_INTS)
            sigma = draw(st.sampled_from([0.0, 4.0, -1.0, np.nan, np.inf, 1e3, 1e4]))
            _core.anomaly_map(s, h, w, sigma, draw(st.sampled_from([0, 1, 2])))
        elif which == "map_into":  # the out= binding: any out shape, read-only, float64
            s = _f32(draw, draw(st.integers(1, 4)))
            out = _f32(draw, draw(st.integers(1, 4)))
            if draw(st.booleans()):
                out.setflags(write=False)
            if draw(st.booleans()):
                out = out.astype(np.float64)
            sigma = draw(st.sampled_from([0.0, 4.0, -1.0, np.nan, np.inf, 1e3, 1e4]))
            _core.anomaly_map_into(s, out, sigma, draw(st.sampled_from([0, 1, 2])))
        else:
            m = _f32(draw, draw(st.integers(1, 4)), max_side=5)
            f = draw(st.integers(0, 4))
            codes = np.array(
                [draw(st.sampled_from([-1, 0, 1, 2, 6, 17, 23, 24, 2**30])) for _ in range(f)],
                np.int32,
            )
            nq = f if draw(st.booleans()) else draw(st.integers(0, 4))
            quant = np.array(
                [draw(st.sampled_from([0.0, 0.5, 1.0, -0.1, 1.5, np.nan])) for _ in range(nq)]
            )
            threshold = draw(st.sampled_from([None, 0.0, np.nan, np.inf, -1e300]))
            _core.describe(
                m,
                codes,
                quant,
                draw(BIG_INTS),
                threshold,
                draw(st.sampled_from([4, 8, 0, 6])),
                draw(st.sampled_from([0, 1, 2, -1])),
            )
    except (ValueError, TypeError, MemoryError) as exc:
        assert str(exc)
