"""structcore.kernels.describe (C++) against structcore.reference.describe (NumPy/SciPy)."""

from __future__ import annotations

import importlib
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage

import structcore
from structcore import _core
from structcore import kernels as K
from structcore import reference as R
from structcore.kernels.describe import EXTENDED_COMPONENTS, PAPER_COMPONENTS

ROOT = Path(__file__).resolve().parents[1]
ALL = (*EXTENDED_COMPONENTS, "q50", "q:0.995", "q0", "q100", "q:0.123")
EXACT = (
    "cc_count",
    "cc_largest_area",
    "cc_total_area",
    "cc_largest_compactness",
    "cc_largest_fill",
    "max",
    "min",
)  # integer statistics (or exact floats of them)


# ---------------------------------------------------------------------------------------------
# helpers


def _blobby(rng: np.random.Generator, b: int, h: int, w: int, sigma: float = 3.0) -> np.ndarray:
    noise = rng.standard_normal((b, h, w))
    return ndimage.gaussian_filter(noise, (0, sigma, sigma)).astype(np.float32)


def assert_matches(maps: np.ndarray, comps: tuple[str, ...], **kw: object) -> np.ndarray:
    """Compare kernel and reference column by column with per-component tolerances."""
    got = K.describe(maps, comps, **kw)
    want = R.describe(maps, comps, **kw)
    assert got.shape == want.shape and got.dtype == np.float64
    assert np.isfinite(got).all()
    got2 = np.atleast_2d(got)
    want2 = np.atleast_2d(want)
    scale = np.abs(np.asarray(maps, np.float64)).max() + np.finfo(np.float64).tiny
    names = list(comps)
    for j, name in enumerate(names):
        g, r = got2[:, j], want2[:, j]
        if name in EXACT:
            np.testing.assert_array_equal(g, r, err_msg=name)
        elif name == "kurtosis":  # m4/m2^2 - 3 cancels: compare m4/m2^2
            np.testing.assert_allclose(g + 3, r + 3, rtol=1e-9, atol=1e-12, err_msg=name)
        elif name == "skew":
            np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-10, err_msg=name)
        elif name == "eccentricity":  # sqrt(2 disc / l1): ill-conditioned near 0
            np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-6, err_msg=name)
        elif name == "orientation":
            _check_orientation(got2, want2, names, j)
        elif name in ("mu20", "mu02", "mu11", "spread"):
            i20, i02 = names.index("mu20"), names.index("mu02")
            tr = want2[:, i20] + want2[:, i02]
            atol = 1e-9 * tr + 1e-12
            if name == "spread":
                atol = np.sqrt(atol)
            np.testing.assert_allclose(g, r, rtol=1e-9, atol=atol.max(), err_msg=name)
        elif name in ("cc_largest_mass", "cc_total_mass"):
            np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-12 * scale, err_msg=name)
        else:  # std, top_mean, tv, mean, quantiles, centroids
            np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-12 * scale, err_msg=name)
    return got


def _check_orientation(got: np.ndarray, want: np.ndarray, names: list[str], j: int) -> None:
    i20, i02, i11 = names.index("mu20"), names.index("mu02"), names.index("mu11")
    a, c, b = want[:, i20], want[:, i02], want[:, i11]
    gap = np.sqrt((a - c) ** 2 + 4 * b**2)  # l1 - l2
    clear = gap > 1e-6 * (a + c)  # away from the isotropic snap
    g2, r2 = 2 * got[clear, j], 2 * want[clear, j]  # the axis angle is defined modulo pi
    np.testing.assert_allclose(np.cos(g2), np.cos(r2), atol=1e-6, err_msg="orientation")
    np.testing.assert_allclose(np.sin(g2), np.sin(r2), atol=1e-6, err_msg="orientation")
    assert ((got[:, j] > -np.pi / 2) & (got[:, j] <= np.pi / 2)).all()


# ---------------------------------------------------------------------------------------------
# the registry


def test_registry_is_shared_and_complete() -> None:
    kd = importlib.import_module("structcore.kernels.describe")
    rd = importlib.import_module("structcore.reference.describe")

    assert kd.DESCRIPTOR_COMPONENTS is rd.DESCRIPTOR_COMPONENTS is K.DESCRIPTOR_COMPONENTS
    assert PAPER_COMPONENTS == ("std", "top_mean", "tv")
    assert set(EXTENDED_COMPONENTS) == set(K.DESCRIPTOR_COMPONENTS)
    assert EXTENDED_COMPONENTS[:3] == PAPER_COMPONENTS
    codes = _core.descriptor_codes()
    for name in K.DESCRIPTOR_COMPONENTS:
        assert name in codes or name == "q99"
        assert K.DESCRIPTOR_COMPONENTS[name]  # a one-line meaning
        assert "\n" not in K.DESCRIPTOR_COMPONENTS[name]


def test_default_is_paper_set_and_column_order() -> None:
    maps = _blobby(np.random.default_rng(1), 3, 20, 30)
    default = K.describe(maps)
    assert default.shape == (3, 3)
    np.testing.assert_array_equal(default, K.describe(maps, PAPER_COMPONENTS))
    rev = K.describe(maps, ("tv", "top_mean", "std", "tv"))
    np.testing.assert_array_equal(rev, default[:, [2, 1, 0, 2]])
    single = K.describe(maps[1], ["std", "q99"])
    assert single.shape == (2,)
    np.testing.assert_array_equal(single, K.describe(maps, ["std", "q99"])[1])
    assert K.describe(maps[0], "max").shape == (1,)


# ---------------------------------------------------------------------------------------------
# against the reference


@st.composite
def _maps_and_threshold(draw: st.DrawFn) -> tuple[np.ndarray, float]:
    b = draw(st.integers(1, 3))
    h = draw(st.integers(1, 24))
    w = draw(st.integers(1, 24))
    kind = draw(st.sampled_from(["ties", "floats", "smooth"]))
    if kind == "ties":  # few distinct values: ties, plateaus and many components
        maps = draw(hnp.arrays(np.int8, (b, h, w), elements=st.integers(0, 3))).astype(np.float32)
    elif kind == "floats":
        maps = draw(hnp.arrays(np.float32, (b, h, w), elements=st.floats(-1e3, 1e3, width=32)))
    else:
        seed = draw(st.integers(0, 2**32 - 1))
        maps = _blobby(np.random.default_rng(seed), b, h, w, sigma=1.5)
    flat = maps.ravel().astype(np.float64)
    how = draw(st.sampled_from(["value", "quantile", "below", "above"]))
    if how == "value":  # exactly a pixel value: S > t must be strict
        t = float(flat[draw(st.integers(0, flat.size - 1))])
    elif how == "quantile":
        t = float(np.quantile(flat, draw(st.floats(0.0, 1.0))))
    elif how == "below":
        t = float(flat.min()) - 1.0
    else:
        t = float(flat.max())
    return maps, t


@given(
    data=_maps_and_threshold(),
    top_ratio=st.floats(1e-4, 1.0),
    connectivity=st.sampled_from([4, 8]),
)
def test_random_maps_match_reference(
    data: tuple[np.ndarray, float], top_ratio: float, connectivity: int
) -> None:
    maps, t = data
    assert_matches(maps, ALL, top_ratio=top_ratio, threshold=t, connectivity=connectivity)


@pytest.mark.parametrize("shape", [(2, 224, 224), (1, 300, 200), (1, 97, 1031)])
def test_large_blobby_maps_match_reference(shape: tuple[int, int, int]) -> None:
    # N >= 8192: the order statistics go through the sampled candidate set.
    rng = np.random.default_rng(sum(shape))
    maps = _blobby(rng, *shape, sigma=4.0)
    t = float(np.quantile(maps, 0.95))
    for conn in (4, 8):
        assert_matches(maps, ALL, threshold=t, connectivity=conn)
    noise = rng.standard_normal(shape).astype(np.float32)  # no spatial correlation
    assert_matches(noise, ALL, threshold=2.0, top_ratio=0.05)


def test_sampled_cut_too_high_falls_back_to_exact_selection() -> None:
    # The sample sees only the value 2.0, so its cut admits ~1000 candidates while the 0.9
    # quantile needs ~5000: the kernel must notice and select over all pixels.
    h = w = 224
    n = h * w
    flat = np.linspace(0.0, 1.0, n, dtype=np.float32)
    flat[_sample_positions(n)] = 2.0
    maps = flat.reshape(1, h, w)
    assert_matches(maps, ("q:0.9", "top_mean", "q99"), top_ratio=0.1)


def _sample_positions(n: int) -> np.ndarray:
    """The kernel's fixed sample for maps of n > 256 pixels (white-box; descriptors.cpp)."""
    s = min(8192, max(256, round(4.5 * np.sqrt(n))))
    stride = n // s
    i = np.arange(s, dtype=np.uint64)
    with np.errstate(over="ignore"):
        hsh = ((i + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)
    off = (hsh * np.uint64(stride)) >> np.uint64(32)
    return i.astype(np.int64) * stride + off.astype(np.int64)


def test_shift_far_from_mean_falls_back_to_two_pass() -> None:
    # The sample sees only the spikes, so the shift of the power sums is ~30 std from the mean:
    # the kernel must switch to exact two-pass moments.
    h = w = 224
    flat = np.zeros(h * w, np.float32)
    flat[_sample_positions(h * w)] = 1e6
    flat[::7] += 0.5
    maps = flat.reshape(1, h, w)
    assert_matches(maps, ("std", "skew", "kurtosis", "mean", "top_mean", "q50"))


def test_extreme_magnitudes() -> None:
    rng = np.random.default_rng(5)
    base = _blobby(rng, 2, 40, 50)
    for scale in (1e-30, 1e-3, 1e30):
        maps = (base * np.float32(scale)).astype(np.float32)
        assert_matches(maps, ALL, threshold=float(np.quantile(maps, 0.9)))
    assert_matches(np.full((1, 3, 3), 3e38, np.float32), ALL, threshold=0.0)


# ---------------------------------------------------------------------------------------------
# blobs of known geometry


def _disc(size: int, r: float) -> np.ndarray:
    yy, xx = np.indices((size, size)) - (size - 1) / 2
    return (yy**2 + xx**2 <= r**2).astype(np.float32)


def test_disc_compactness_tends_to_pi2_over_16() -> None:
    values = []
    for r in (5, 20, 60, 120):
        disc = _disc(2 * r + 9, r)
        got = assert_matches(
            disc,
            (
                "cc_largest_compactness",
                "cc_count",
                "eccentricity",
                "mu20",
                "mu02",
                "mu11",
                "orientation",
                "spread",
            ),
            threshold=0.5,
        )
        assert got[1] == 1 and got[2] < 1e-6
        values.append(got[0])
    assert values == sorted(values)  # perimeter 8r + 4 against area ~ pi r^2
    assert abs(values[-1] - np.pi**2 / 16) < 0.01 * np.pi**2 / 16


def test_square_line_and_orientation() -> None:
    comps = (
        "cc_largest_fill",
        "cc_largest_compactness",
        "eccentricity",
        "orientation",
        "cc_count",
        "cc_largest_area",
    )
    sq = np.zeros((20, 20), np.float32)
    sq[3:13, 5:15] = 1
    fill, comp, ecc, orient, count, area = K.describe(sq, comps, threshold=0.5)
    assert (fill, count, area) == (1.0, 1.0, 100 / 400)
    assert comp == pytest.approx(np.pi / 4, rel=1e-12)
    assert ecc == 0.0 and orient == 0.0
    lines = {
        "horizontal": (np.s_[7, 2:30], 0.0),
        "vertical": (np.s_[2:30, 7], np.pi / 2),
    }
    for name, (idx, angle) in lines.items():
        m = np.zeros((32, 32), np.float32)
        m[idx] = 1
        got = K.describe(m, comps, threshold=0.5)
        assert got[2] == pytest.approx(1.0, abs=1e-12), name
        assert got[3] == pytest.approx(angle, abs=1e-12), name
    diag = np.eye(30, dtype=np.float32)  # y grows with x: toward +y from +x = +pi/4
    got = assert_matches(
        diag,
        ("eccentricity", "orientation", "mu20", "mu02", "mu11", "cc_count"),
        threshold=0.5,
        connectivity=8,
    )
    assert got[0] == pytest.approx(1.0, abs=1e-7) and got[1] == pytest.approx(np.pi / 4)
    assert got[5] == 1
    anti = np.ascontiguousarray(diag[:, ::-1])
    assert K.describe(anti, ["orientation"], threshold=0.5)[0] == pytest.approx(-np.pi / 4)
    assert K.describe(diag, ["cc_count"], threshold=0.5, connectivity=4)[0] == 30


def test_two_blobs_diagonal_pair_and_ties() -> None:
    m = np.zeros((10, 12), np.float32)
    m[1:4, 1:4] = 2.0  # 9 px, first in raster order
    m[6:9, 7:10] = 5.0  # 9 px, heavier
    comps = ("cc_count", "cc_largest_area", "cc_largest_mass", "cc_total_mass", "cc_total_area")
    got = assert_matches(m, comps, threshold=1.0)
    assert got[0] == 2 and got[1] == 9 / 120
    assert got[2] == pytest.approx(9 * 1.0)  # the tie goes to the first blob (mass 9 * (2 - 1))
    assert got[3] == pytest.approx(9 * 1.0 + 9 * 4.0) and got[4] == 18 / 120
    pair = np.zeros((4, 4), np.float32)
    pair[1, 1] = pair[2, 2] = 1
    assert K.describe(pair, ["cc_count"], threshold=0.5, connectivity=8)[0] == 1
    assert K.describe(pair, ["cc_count"], threshold=0.5, connectivity=4)[0] == 2


def test_ring_perimeter_counts_the_hole() -> None:
    m = np.ones((5, 5), np.float32)
    m[2, 2] = 0  # area 24, outer 20 + hole 4 edges
    got = K.describe(m, ["cc_largest_compactness", "cc_largest_fill"], threshold=0.5)
    assert got[0] == pytest.approx(4 * np.pi * 24 / 24**2) and got[1] == 24 / 25


# ---------------------------------------------------------------------------------------------
# edge cases: defined values, never NaN


def test_constant_map() -> None:
    m = np.full((2, 7, 9), 0.3, np.float32)
    comps = ("std", "skew", "kurtosis", "tv", "top_mean", "q99", "mean", "max", "min")
    got = assert_matches(m, comps)
    v = float(np.float32(0.3))
    np.testing.assert_array_equal(got, np.tile([0, 0, 0, 0, v, v, v, v, v], (2, 1)))


def test_nothing_and_everything_above() -> None:
    m = _blobby(np.random.default_rng(2), 1, 11, 16)[0]
    comps = EXTENDED_COMPONENTS[EXTENDED_COMPONENTS.index("centroid_y") :]
    none = dict(zip(comps, assert_matches(m, comps, threshold=float(m.max())), strict=True))
    assert none["centroid_y"] == 5.0 and none["centroid_x"] == 7.5
    assert all(none[c] == 0 for c in comps if not c.startswith("centroid"))
    every = dict(zip(comps, assert_matches(m, comps, threshold=float(m.min()) - 1), strict=True))
    assert (
        every["cc_count"] == 1 and every["cc_largest_area"] == 1 and every["cc_largest_fill"] == 1
    )
    assert every["cc_largest_compactness"] == pytest.approx(4 * np.pi * 176 / (2 * 27) ** 2)


@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (17, 1), (2, 1), (1, 2)])
def test_degenerate_shapes(shape: tuple[int, int]) -> None:
    m = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)[::-1].copy()
    got = assert_matches(m, ALL, threshold=float(m.mean()) - 0.25)
    assert np.isfinite(got).all()
    if shape == (1, 1):
        single = dict(zip(ALL, K.describe(m, ALL, threshold=-1.0), strict=True))
        assert single["std"] == 0 and single["tv"] == 0 and single["cc_count"] == 1
        assert single["cc_largest_compactness"] == pytest.approx(np.pi / 4)
        assert single["eccentricity"] == 0 and single["spread"] == 0


def test_top_k_rounds_half_to_even() -> None:
    # N = 250: 0.01 * 250 = 2.5 -> k = 2 (Python round); N = 350: 3.5 -> 4.
    for h, k in ((25, 2), (35, 4)):
        m = np.arange(h * 10, dtype=np.float32).reshape(h, 10)
        n = h * 10
        want = np.arange(n - k, n, dtype=np.float64).mean()
        assert K.describe(m, ["top_mean"])[0] == want
        assert R.describe(m, ["top_mean"])[0] == want
    m = np.arange(100, dtype=np.float32).reshape(10, 10)
    assert K.describe(m, ["top_mean"], top_ratio=1e-6)[0] == 99  # k = max(1, 0)
    assert K.describe(m, ["top_mean"], top_ratio=1.0)[0] == pytest.approx(49.5)


def test_quantile_names() -> None:
    m = np.random.default_rng(3).random((13, 17)).astype(np.float32)
    got = K.describe(m, ["q99", "q:0.99", "q95", "q:0.95", "q0", "q100", "q50"])
    s = m.astype(np.float64)
    want = np.quantile(s, [0.99, 0.99, 0.95, 0.95, 0.0, 1.0, 0.5])
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[4] == s.min() and got[5] == s.max()


def test_noncontiguous_and_float64_input() -> None:
    big = _blobby(np.random.default_rng(4), 2, 40, 60)
    view = big[:, ::2, 1::3]
    want = K.describe(np.ascontiguousarray(view), ALL, threshold=0.0)
    np.testing.assert_array_equal(K.describe(view, ALL, threshold=0.0), want)
    np.testing.assert_array_equal(K.describe(view.astype(np.float64), ALL, threshold=0.0), want)
    with pytest.raises(TypeError):
        _core.describe(view, np.zeros(1, np.int32), np.zeros(1), 1, None, 8, 1)
    with pytest.raises(TypeError):
        _core.describe(big.astype(np.float64), np.zeros(1, np.int32), np.zeros(1), 1, None, 8, 1)


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("fn", [K.describe, R.describe], ids=["kernel", "reference"])
def test_bad_input(fn: object) -> None:
    ok = np.zeros((2, 5, 6), np.float32)
    describe = fn  # type: ignore[assignment]
    for bad in (np.nan, np.inf, -np.inf):
        m = ok.copy()
        m[1, 2, 3] = bad
        with pytest.raises(ValueError, match="finite"):
            describe(m)
    with pytest.raises(ValueError, match="dimensional"):
        describe(np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="dimensional"):
        describe(np.zeros((1, 1, 2, 2), np.float32))
    with pytest.raises(ValueError, match="empty"):
        describe(np.zeros((0, 5), np.float32))
    with pytest.raises(ValueError, match="empty"):
        describe(np.zeros((0, 5, 5), np.float32))
    for dtype in (np.int32, np.uint8, np.bool_, np.complex64):
        with pytest.raises(TypeError, match="maps"):
            describe(ok.astype(dtype))
    with pytest.raises(ValueError, match="unknown component 'stdev'"):
        describe(ok, ["std", "stdev"])
    with pytest.raises(ValueError, match="ambiguous"):
        describe(ok, ["q0.995"])
    with pytest.raises(ValueError, match=r"q0'\.\.'q100"):
        describe(ok, ["q101"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        describe(ok, ["q:1.5"])
    with pytest.raises(ValueError, match="at least one"):
        describe(ok, [])
    with pytest.raises(TypeError, match="names"):
        describe(ok, ["std", 3])
    for ratio in (0.0, -0.1, 1.5, math.nan, math.inf):
        with pytest.raises(ValueError, match="top_ratio"):
            describe(ok, top_ratio=ratio)
    with pytest.raises(TypeError, match="top_ratio"):
        describe(ok, top_ratio="0.01")
    for conn in (0, 6, 26):
        with pytest.raises(ValueError, match="connectivity"):
            describe(ok, connectivity=conn)
    with pytest.raises(TypeError, match="connectivity"):
        describe(ok, connectivity=8.0)
    with pytest.raises(ValueError, match=r"threshold is None.*cc_count"):
        describe(ok, ["std", "cc_count"])
    with pytest.raises(ValueError, match="threshold must be finite"):
        describe(ok, ["cc_count"], threshold=math.nan)
    with pytest.raises(TypeError, match="threshold"):
        describe(ok, ["cc_count"], threshold="0.5")
    with pytest.raises((TypeError, ValueError), match="threads"):
        describe(ok, threads=0)
    # threshold is validated but not required when no component needs it
    assert np.isfinite(describe(ok, ["std"], threshold=0.5)).all()


def test_core_preconditions_raise_value_error() -> None:
    m = np.zeros((1, 4, 4), np.float32)
    q = np.zeros(1)
    with pytest.raises(ValueError, match="code"):
        _core.describe(m, np.array([99], np.int32), q, 1, None, 8, 1)
    with pytest.raises(ValueError, match="top_k"):
        _core.describe(m, np.array([1], np.int32), q, 17, None, 8, 1)
    with pytest.raises(ValueError, match="threshold"):
        _core.describe(m, np.array([17], np.int32), q, 1, None, 8, 1)
    with pytest.raises(ValueError, match="quantile"):
        _core.describe(m, np.array([6], np.int32), np.array([1.5]), 1, None, 8, 1)
    with pytest.raises(ValueError, match="connectivity"):
        _core.describe(m, np.array([17], np.int32), q, 1, 0.0, 6, 1)
    with pytest.raises(ValueError, match="3-dimensional"):
        _core.describe(m[0], np.array([0], np.int32), q, 1, None, 8, 1)


# ---------------------------------------------------------------------------------------------
# threads


def test_threads_do_not_change_results() -> None:
    maps = _blobby(np.random.default_rng(6), 24, 64, 80)
    t = float(np.quantile(maps, 0.95))
    one = K.describe(maps, ALL, threshold=t, threads=1)
    two = K.describe(maps, ALL, threshold=t, threads=2)
    np.testing.assert_array_equal(one, two)
    per_map = np.stack([K.describe(m, ALL, threshold=t, threads=1) for m in maps])
    np.testing.assert_array_equal(one, per_map)


def test_concurrent_python_threads_match_sequential() -> None:
    rng = np.random.default_rng(7)
    batches = [_blobby(rng, 6, 48 + 8 * i, 64) for i in range(8)]
    ts = [float(np.quantile(b, 0.95)) for b in batches]
    seq = [K.describe(b, ALL, threshold=t, threads=2) for b, t in zip(batches, ts, strict=True)]
    results: list[np.ndarray | None] = [None] * 8
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(3):
                results[i] = K.describe(batches[i], ALL, threshold=ts[i], threads=2)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for th in workers:
        th.start()
    for th in workers:
        th.join()
    assert not errors
    for got, want in zip(results, seq, strict=True):
        np.testing.assert_array_equal(got, want)


def test_scalar_simd_level_matches_reference() -> None:
    # The runtime-dispatched kernels (scalar / AVX2 / AVX-512) must all agree with the reference;
    # this process runs the widest level, a child runs the others.
    code = (
        "import numpy as np, sys\n"
        "sys.path.insert(0, 'tests')\n"
        "from test_describe import assert_matches, _blobby, ALL\n"
        "from structcore import _core\n"
        "rng = np.random.default_rng(8)\n"
        "m = _blobby(rng, 2, 150, 131)\n"
        "for c in (4, 8): assert_matches(m, ALL, threshold=float(np.quantile(m, 0.95)), "
        "connectivity=c)\n"
        "assert_matches(rng.random((1, 9, 13), dtype=np.float32), ALL, threshold=0.5)\n"
        "print(_core.simd_level())\n"
    )
    env = dict(os.environ)
    package_root = Path(structcore.__file__).resolve().parents[1]  # source tree or site-packages
    env["PYTHONPATH"] = os.pathsep.join([str(package_root), env.get("PYTHONPATH", "")])
    levels = {"scalar", "avx2"} if _core.simd_level() == "avx512" else {"scalar"}
    for level in sorted(levels):
        env["STRUCTCORE_SIMD"] = level
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == level


def test_point_like_mass_has_zero_eccentricity_in_both() -> None:
    """Regression (CI hypothesis run): a 2.4e-40 weight beside a weight of 1 has a true
    variance of ~2e-40 px^2; the C++ one-pass moments cannot resolve it. Both sides now call
    a mass with l1 <= 1e-9 px^2 a point (eccentricity and orientation 0)."""
    from structcore import kernels, reference

    maps = np.array([[[-2.36716e-40, 0.0, 1.0]]], dtype=np.float32)
    t = -2.3671574438453405e-40
    names = ["eccentricity", "orientation", "mu02"]
    got = kernels.describe(maps, names, threshold=t, connectivity=4)
    want = reference.describe(maps, names, threshold=t, connectivity=4)
    assert got[0, 0] == want[0, 0] == 0.0
    assert got[0, 1] == want[0, 1] == 0.0
    # a resolvable elongated mass still reads as a line
    line = np.zeros((1, 5, 9), np.float32)
    line[0, 2, 1:8] = 1.0
    assert kernels.describe(line, ["eccentricity"], threshold=0.5)[0, 0] == pytest.approx(1.0)
