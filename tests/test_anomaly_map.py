"""structcore.kernels.anomaly_map (C++) vs structcore.reference.anomaly_map (NumPy/SciPy) vs
torch.nn.functional.interpolate + scipy.ndimage.gaussian_filter (the composition they mirror).
"""

from __future__ import annotations

import doctest
import importlib
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import ndimage

import structcore
from structcore import _core, kernels, reference

# The packages re-export the functions under the modules' names: fetch the modules themselves.
anomaly_map_module = importlib.import_module("structcore.kernels.anomaly_map")
reference_module = importlib.import_module("structcore.reference.anomaly_map")

IMPLS = [kernels.anomaly_map, reference.anomaly_map]
IMPL_IDS = ["kernels", "reference"]
RTOL = 1e-5


def torch_scipy(scores: np.ndarray, size: tuple[int, int], sigma: float) -> np.ndarray:
    """The composition the kernel reproduces: torch bilinear, then scipy's Gaussian."""
    up = torch.nn.functional.interpolate(
        torch.from_numpy(np.ascontiguousarray(scores, np.float32)[:, None]),
        size=size,
        mode="bilinear",
        align_corners=False,
    )[:, 0].numpy()
    if sigma > 0:
        up = ndimage.gaussian_filter(up, sigma=(0.0, sigma, sigma), mode="reflect", truncate=4.0)
    return up


def assert_close(actual: np.ndarray, expected: np.ndarray, scale: float = 0.0) -> None:
    """Elementwise |a - e| <= RTOL * (|e| + scale); scale = max|input| for mixed signs."""
    assert actual.shape == expected.shape
    assert actual.dtype == np.float32
    err = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    bound = RTOL * (np.abs(expected.astype(np.float64)) + scale) + 1e-37
    worst = float(np.max(err / bound))
    assert worst <= 1.0, f"max error {float(err.max())!r} is {worst:.3g} x the tolerance"


def check_all(scores: np.ndarray, size: tuple[int, int], sigma: float, signed: bool) -> None:
    scale = float(np.abs(scores).max()) if signed else 0.0
    expected = torch_scipy(scores, size, sigma)
    ref = reference.anomaly_map(scores, size, sigma=sigma)
    cpp = kernels.anomaly_map(scores, size, sigma=sigma)
    assert_close(ref, expected, scale)
    assert_close(cpp, expected, scale)
    assert_close(cpp, ref, scale)


# ---- random shapes --------------------------------------------------------------------------


@given(
    n_maps=st.integers(1, 3),
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    height=st.integers(1, 300),
    width=st.integers(1, 300),
    sigma=st.one_of(st.just(0.0), st.floats(0.0, 10.0)),
    signed=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_matches_torch_scipy_random(
    n_maps: int,
    h: int,
    w: int,
    height: int,
    width: int,
    sigma: float,
    signed: bool,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.random((n_maps, h, w), dtype=np.float32) * 3.0
    if signed:
        scores -= 1.5
    check_all(scores, (height, width), sigma, signed)


@pytest.mark.parametrize(
    ("shape", "size", "sigma"),
    [
        ((2, 28, 28), (224, 224), 4.0),  # the PatchCore map
        ((1, 1, 1), (5, 7), 3.0),
        ((1, 1, 5), (1, 9), 10.0),  # kernel much wider than the image: repeated reflection
        ((1, 3, 4), (2, 3), 100.0),
        ((1, 5, 5), (3, 7), 37.3),
        ((1, 40, 40), (7, 5), 2.5),  # downsampling
        ((1, 200, 3), (10, 300), 4.0),  # downsampling rows, upsampling columns
        ((1, 3, 200), (300, 10), 4.0),
        ((1, 64, 64), (64, 64), 1.5),  # same size: ATen copies
        ((1, 28, 28), (224, 224), 0.1),  # radius 0: no blur
    ],
)
def test_matches_torch_scipy_cases(
    shape: tuple[int, int, int], size: tuple[int, int], sigma: float
) -> None:
    scores = np.random.default_rng(1).random(shape, dtype=np.float32)
    check_all(scores, size, sigma, signed=False)


def test_bilinear_taps_bitwise_like_torch() -> None:
    # Odd/even 0-1 patterns read PyTorch's lambda1 exactly (l0 * 0 + l1 * 1).
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip("ATen's scalar kernel rounds the source coordinate twice, not once")
    for n, n_out in [(40, 300), (9, 59), (13, 301), (7, 250), (38, 24), (3, 16384)]:
        i0, i1, l0, l1 = reference_module._bilinear_taps(n, n_out)
        odd = (np.arange(n) % 2).astype(np.float32)
        out = {}
        for name, row in (("odd", odd), ("even", 1 - odd)):
            out[name] = torch.nn.functional.interpolate(
                torch.from_numpy(row[None, None, None].copy()),
                size=(1, n_out),
                mode="bilinear",
                align_corners=False,
            )[0, 0, 0].numpy()
        inner = i1 > i0
        lam = np.where(i0 % 2 == 0, out["odd"], out["even"])
        np.testing.assert_array_equal(l1[inner], lam[inner])
        np.testing.assert_array_equal(l0 + l1, np.ones_like(l0))


def test_sigma_zero_is_plain_bilinear() -> None:
    scores = np.random.default_rng(2).random((3, 11, 17), dtype=np.float32)
    up = torch_scipy(scores, (50, 61), 0.0)
    assert_close(kernels.anomaly_map(scores, (50, 61), sigma=0), up)
    np.testing.assert_array_equal(
        kernels.anomaly_map(scores, (50, 61), sigma=0.1),
        kernels.anomaly_map(scores, (50, 61), sigma=0.0),
    )


# ---- adversarial values and layouts ---------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS, ids=IMPL_IDS)
@pytest.mark.parametrize("size", [1, (1, 9), 13, (300, 2)])
def test_one_by_one_input_is_constant(impl, size) -> None:  # type: ignore[no-untyped-def]
    out = impl(np.full((1, 1), 2.5, np.float32), size, sigma=3.0)
    np.testing.assert_allclose(out, 2.5, rtol=1e-6)


@pytest.mark.parametrize("impl", IMPLS, ids=IMPL_IDS)
@pytest.mark.parametrize("sigma", [0.0, 0.7, 4.0, 10.0, 250.0])
def test_constant_maps_stay_constant(impl, sigma: float) -> None:  # type: ignore[no-untyped-def]
    scores = np.full((2, 13, 7), -3.25, np.float32)
    out = impl(scores, (97, 41), sigma=sigma)
    np.testing.assert_allclose(out, -3.25, rtol=2e-6)


@pytest.mark.parametrize("magnitude", [1e-30, 1e-12, 1e12, 1e30])
def test_huge_and_tiny_magnitudes(magnitude: float) -> None:
    rng = np.random.default_rng(3)
    scores = (rng.random((2, 9, 12)) * magnitude).astype(np.float32)
    check_all(scores, (45, 60), 2.0, signed=False)
    assert np.isfinite(kernels.anomaly_map(scores, 60)).all()


def test_float64_and_non_contiguous_inputs() -> None:
    rng = np.random.default_rng(4)
    base = rng.random((3, 20, 30), dtype=np.float32)
    expected = kernels.anomaly_map(base, (64, 80))
    np.testing.assert_array_equal(kernels.anomaly_map(base.astype(np.float64), (64, 80)), expected)
    big = np.zeros((3, 40, 60), np.float32)
    big[:, ::2, ::2] = base
    view = big[:, ::2, ::2]
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(kernels.anomaly_map(view, (64, 80)), expected)
    np.testing.assert_array_equal(
        reference.anomaly_map(view, (64, 80)), reference.anomaly_map(base, (64, 80))
    )
    fortran = np.asfortranarray(base)
    np.testing.assert_array_equal(kernels.anomaly_map(fortran, (64, 80)), expected)
    # the private binding takes exactly C-contiguous float32
    with pytest.raises(TypeError):
        _core.anomaly_map(view, 64, 80, 4.0, 0)
    with pytest.raises(TypeError):
        _core.anomaly_map(base.astype(np.float64), 64, 80, 4.0, 0)


def test_large_outputs_reuse_blocks_safely() -> None:
    # >= 4 MiB outputs come from a kept huge-page block: reuse must never alias a live array.
    rng = np.random.default_rng(10)
    a_in = rng.random((30, 28, 28), dtype=np.float32)
    b_in = rng.random((30, 28, 28), dtype=np.float32)
    want_a = reference.anomaly_map(a_in, 224)
    want_b = reference.anomaly_map(b_in, 224)
    a = kernels.anomaly_map(a_in, 224)
    b = kernels.anomaly_map(b_in, 224)  # while a is alive
    assert not np.shares_memory(a, b)
    assert a.flags.writeable and a.flags.c_contiguous
    view = a[3]
    del a  # the view keeps the block alive
    c = kernels.anomaly_map(b_in, 224)
    assert not np.shares_memory(view, c)
    assert_close(view, want_a[3])
    del view, b
    for _ in range(3):  # released and reused blocks hold correct results
        assert_close(kernels.anomaly_map(a_in, 224), want_a)
        assert_close(kernels.anomaly_map(b_in, (224, 224)), want_b)
    np.testing.assert_array_equal(c, kernels.anomaly_map(b_in, 224, threads=1))


def test_streamed_large_batch_equals_small_batches() -> None:
    # >= 32 MiB of output is written with non-temporal stores: same values, bit for bit.
    scores = np.random.default_rng(11).random((170, 28, 28), dtype=np.float32)
    big = kernels.anomaly_map(scores, 224, threads=2)
    assert big.nbytes >= 32 * 2**20
    for start in range(0, 170, 34):
        np.testing.assert_array_equal(
            big[start : start + 34], kernels.anomaly_map(scores[start : start + 34], 224)
        )


def test_two_dimensional_input_gives_two_dimensional_map() -> None:
    scores = np.random.default_rng(5).random((28, 28), dtype=np.float32)
    out = kernels.anomaly_map(scores, 224)
    assert out.shape == (224, 224)
    np.testing.assert_array_equal(out, kernels.anomaly_map(scores[None], 224)[0])
    assert reference.anomaly_map(scores, (10, 20)).shape == (10, 20)


# ---- out= (writing into a caller's buffer) ---------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS, ids=IMPL_IDS)
def test_out_is_written_and_returned(impl) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(12)
    scores = rng.random((5, 28, 28), dtype=np.float32)
    ring = np.full((8, 64, 48), np.nan, np.float32)  # a ring buffer: write slots 2..6
    got = impl(scores, (64, 48), sigma=3.0, out=ring[2:7])
    assert got is not None and np.shares_memory(got, ring)
    np.testing.assert_array_equal(got, impl(scores, (64, 48), sigma=3.0))
    assert np.isnan(ring[:2]).all() and np.isnan(ring[7:]).all()  # nothing outside written
    single = np.empty((64, 48), np.float32)
    assert impl(scores[1], (64, 48), sigma=3.0, out=single) is single
    np.testing.assert_array_equal(single, ring[3])


def test_out_large_streamed_batch_bitwise() -> None:
    # >= 32 MiB goes through the non-temporal store path; a caller's buffer behaves the same.
    scores = np.random.default_rng(13).random((170, 28, 28), dtype=np.float32)
    buf = np.empty((170, 224, 224), np.float32)
    for threads in (1, 2):
        buf.fill(-1.0)
        assert kernels.anomaly_map(scores, 224, threads=threads, out=buf) is buf
        np.testing.assert_array_equal(buf, kernels.anomaly_map(scores, 224, threads=1))


def _bad_outs() -> list[tuple[object, type[Exception], str]]:
    good = np.zeros((2, 16, 16), np.float32)  # np.empty may hold signalling NaNs: cast warns
    readonly = good.copy()
    readonly.setflags(write=False)
    return [
        (good.tolist(), TypeError, "numpy.ndarray"),
        (good.astype(np.float64), TypeError, "float32"),
        (np.empty((2, 16, 15), np.float32), ValueError, r"shape \(2, 16, 16\)"),
        (np.empty((16, 16), np.float32), ValueError, "shape"),
        (np.empty((2, 16, 32), np.float32)[:, :, ::2], ValueError, "C-contiguous"),
        (readonly, ValueError, "writeable"),
    ]


@pytest.mark.parametrize("impl", IMPLS, ids=IMPL_IDS)
@pytest.mark.parametrize(("out", "exc", "match"), _bad_outs())
def test_bad_out(impl, out, exc, match: str) -> None:  # type: ignore[no-untyped-def]
    scores = np.ones((2, 4, 4), np.float32)
    with pytest.raises(exc, match=match):
        impl(scores, 16, out=out)


@pytest.mark.parametrize("impl", IMPLS, ids=IMPL_IDS)
def test_out_overlapping_input_refused(impl) -> None:  # type: ignore[no-untyped-def]
    buf = np.random.default_rng(14).random((2, 8, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="overlap"):
        impl(buf, 8, out=buf)
    with pytest.raises(ValueError, match="overlap"):
        impl(buf[0], 8, out=buf[0])
    # Disjoint parts of one buffer are fine, as is a strided view (validation copies it).
    want = impl(buf[:1].copy(), 8)
    np.testing.assert_array_equal(impl(buf[:1], 8, out=buf[1:]), want)
    strided = buf[:, ::2, ::2]
    want = impl(strided, 8)
    np.testing.assert_array_equal(impl(strided, 8, out=buf), want)


def test_core_anomaly_map_into_checks_bounds() -> None:
    # The raw binding must refuse what would write or read out of bounds, never crash.
    scores = np.ones((2, 4, 4), np.float32)
    with pytest.raises(ValueError, match="one map per grid"):
        _core.anomaly_map_into(scores, np.empty((3, 8, 8), np.float32), 4.0, 0)
    with pytest.raises(ValueError, match="3-dimensional"):
        _core.anomaly_map_into(scores, np.empty((8, 8), np.float32), 4.0, 0)
    with pytest.raises(ValueError, match="size"):
        _core.anomaly_map_into(scores, np.empty((2, 0, 8), np.float32), 4.0, 0)
    readonly = np.empty((2, 8, 8), np.float32)
    readonly.setflags(write=False)
    with pytest.raises(ValueError, match="writeable"):
        _core.anomaly_map_into(scores, readonly, 4.0, 0)
    with pytest.raises(TypeError):
        _core.anomaly_map_into(scores, np.empty((2, 8, 8), np.float64), 4.0, 0)


def test_size_forms() -> None:
    scores = np.random.default_rng(6).random((1, 4, 5), dtype=np.float32)
    a = kernels.anomaly_map(scores, 12)
    np.testing.assert_array_equal(a, kernels.anomaly_map(scores, (12, 12)))
    np.testing.assert_array_equal(a, kernels.anomaly_map(scores, [np.int64(12), 12]))
    np.testing.assert_array_equal(a, kernels.anomaly_map(scores, np.int32(12)))


# ---- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS, ids=IMPL_IDS)
@pytest.mark.parametrize(
    ("scores", "match"),
    [
        (np.array([[1.0, np.nan]], np.float32), "patch_scores must be finite"),
        (np.array([[1.0, np.inf]], np.float32), "patch_scores must be finite"),
        (np.array([[-np.inf]], np.float64), "patch_scores must be finite"),
        (np.zeros(5, np.float32), "patch_scores must be 2 or 3-dimensional"),
        (np.zeros((1, 2, 3, 4), np.float32), "patch_scores must be 2 or 3-dimensional"),
        (np.zeros((0, 3, 3), np.float32), "patch_scores must not be empty"),
        (np.zeros((2, 0), np.float32), "patch_scores must not be empty"),
    ],
)
def test_bad_scores_raise_value_error(impl, scores: np.ndarray, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        impl(scores, 8)


@pytest.mark.parametrize("impl", IMPLS, ids=IMPL_IDS)
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_, np.complex64])
def test_non_float_scores_raise_type_error(impl, dtype) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TypeError, match="patch_scores"):
        impl(np.ones((3, 3), dtype=dtype), 8)


@pytest.mark.parametrize("impl", IMPLS, ids=IMPL_IDS)
@pytest.mark.parametrize(
    ("size", "exc", "match"),
    [
        (0, ValueError, r"size must be in \[1, 16384\]; got 0"),
        (-3, ValueError, r"size must be in \[1, 16384\]"),
        (16385, ValueError, r"size must be in \[1, 16384\]; got 16385"),
        ((8, 0), ValueError, r"size\[1\] \(W\) must be in \[1, 16384\]"),
        ((10**9, 8), ValueError, r"size\[0\] \(H\) must be in \[1, 16384\]"),
        ((8,), ValueError, "size must be an int or a pair"),
        ((8, 8, 8), ValueError, "size must be an int or a pair"),
        (8.0, TypeError, "size must be an int"),
        (True, TypeError, "size must be an int"),
        ((8, 2.5), TypeError, "size"),
        ("224", TypeError, "size must be an int"),
    ],
)
def test_bad_size(impl, size, exc, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(exc, match=match):
        impl(np.ones((3, 3), np.float32), size)


@pytest.mark.parametrize("impl", IMPLS, ids=IMPL_IDS)
def test_output_too_large_refused_before_allocating(impl) -> None:  # type: ignore[no-untyped-def]
    scores = np.ones((5, 1, 1), np.float32)  # 5 * 16384**2 > 2**30
    with pytest.raises(ValueError, match=r"size: the output would hold .* MAX_ELEMENTS = 2\*\*30"):
        impl(scores, 16384)
    assert anomaly_map_module.MAX_ELEMENTS == _core.ANOMALY_MAP_MAX_ELEMENTS
    assert anomaly_map_module.MAX_SIDE == _core.ANOMALY_MAP_MAX_SIDE
    assert anomaly_map_module.MAX_SIGMA == _core.ANOMALY_MAP_MAX_SIGMA


@pytest.mark.parametrize("impl", IMPLS, ids=IMPL_IDS)
@pytest.mark.parametrize(
    ("sigma", "exc", "match"),
    [
        (-1.0, ValueError, "sigma must be finite and >= 0"),
        (-1e-300, ValueError, "sigma must be finite and >= 0"),
        (float("nan"), ValueError, "sigma must be finite"),
        (float("inf"), ValueError, "sigma must be finite"),
        (1000.5, ValueError, "sigma must be <= MAX_SIGMA = 1000"),
        ("4", TypeError, "sigma must be a real number"),
        (None, TypeError, "sigma must be a real number"),
        (True, TypeError, "sigma must be a real number"),
    ],
)
def test_bad_sigma(impl, sigma, exc, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(exc, match=match):
        impl(np.ones((3, 3), np.float32), 8, sigma=sigma)


@pytest.mark.parametrize("impl", IMPLS, ids=IMPL_IDS)
@pytest.mark.parametrize(("threads", "exc"), [(0, ValueError), (-2, ValueError), (1.5, TypeError)])
def test_bad_threads(impl, threads, exc) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(exc, match="threads"):
        impl(np.ones((3, 3), np.float32), 8, threads=threads)


def test_core_rejects_bad_sizes_and_sigma() -> None:
    scores = np.ones((1, 3, 3), np.float32)
    for height, width, sigma in [(0, 4, 1.0), (4, 16385, 1.0), (4, 4, -1.0), (4, 4, float("nan"))]:
        with pytest.raises(ValueError, match="anomaly_map"):
            _core.anomaly_map(scores, height, width, sigma, 1)
    with pytest.raises(ValueError, match="2\\*\\*30"):
        _core.anomaly_map(np.ones((5, 1, 1), np.float32), 16384, 16384, 1.0, 1)


# ---- threads --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_maps", "size"),
    [(1, (600, 500)), (2, (224, 1000)), (5, (224, 224)), (3, (300, 17)), (1, (224, 224))],
)
def test_threads_bitwise_identical(n_maps: int, size: tuple[int, int]) -> None:
    scores = np.random.default_rng(7).random((n_maps, 28, 28), dtype=np.float32)
    one = kernels.anomaly_map(scores, size, threads=1)
    for threads in (2, 3, None):
        np.testing.assert_array_equal(kernels.anomaly_map(scores, size, threads=threads), one)


def test_concurrent_python_threads_match_sequential() -> None:
    rng = np.random.default_rng(8)
    jobs = [
        (rng.random((int(rng.integers(1, 4)), 28, 28), dtype=np.float32), size, sigma)
        for size, sigma in [(224, 4.0), ((100, 60), 2.0), (31, 0.0), ((224, 300), 7.5)] * 4
    ]
    sequential = [kernels.anomaly_map(s, size, sigma=sigma, threads=2) for s, size, sigma in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [
            pool.submit(kernels.anomaly_map, s, size, sigma=sigma, threads=2)
            for s, size, sigma in jobs * 2
        ]
        results = [f.result() for f in futures]
    for i, got in enumerate(results):
        np.testing.assert_array_equal(got, sequential[i % len(jobs)])


# ---- every SIMD level, and the docstrings ---------------------------------------------------

_LEVEL_SCRIPT = """
import numpy as np
from structcore import _core, kernels, reference
assert _core.simd_level() == {level!r}, _core.simd_level()
rng = np.random.default_rng(9)
for shape, size, sigma in [((2, 28, 28), (224, 224), 4.0), ((1, 7, 40), (33, 301), 9.0),
                           ((1, 40, 3), (17, 5), 1.0), ((1, 1, 2), (1, 23), 0.0)]:
    s = rng.random(shape, dtype=np.float32)
    got = kernels.anomaly_map(s, size, sigma=sigma)
    want = reference.anomaly_map(s, size, sigma=sigma)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=0)
    np.testing.assert_array_equal(kernels.anomaly_map(s, size, sigma=sigma, threads=2),
                                  kernels.anomaly_map(s, size, sigma=sigma, threads=1))
big = rng.random((170, 28, 28), dtype=np.float32)  # >= 32 MiB: non-temporal stores
np.testing.assert_array_equal(kernels.anomaly_map(big, 224)[-5:],
                              kernels.anomaly_map(big[-5:], 224))
print("ok")
"""

_ORDER = ["scalar", "avx2", "avx512"]


@pytest.mark.parametrize("level", _ORDER)
def test_every_simd_level_matches_reference(level: str) -> None:
    if _ORDER.index(level) > _ORDER.index(_core.simd_level()):
        pytest.skip(f"this CPU (or STRUCTCORE_SIMD) does not run {level}")
    env = dict(os.environ, STRUCTCORE_SIMD=level)
    src = str(Path(structcore.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", _LEVEL_SCRIPT.format(level=level)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"


@pytest.mark.parametrize("module", [anomaly_map_module, reference_module])
def test_docstring_examples(module) -> None:  # type: ignore[no-untyped-def]
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
