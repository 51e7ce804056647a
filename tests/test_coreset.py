"""structcore.kernels.coreset against structcore.reference.coreset, and the k-center property."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from structcore import _core, kernels, reference
from structcore.projection import prepare_points
from structcore.reference.coreset import squared_distances


def _features(n_points: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n_points, dim)).astype(np.float32)


def _check_same(features: np.ndarray, n: int, **kw: object) -> np.ndarray:
    got = kernels.coreset(features, n, **kw)
    want = reference.coreset(features, n, **kw)
    assert got.dtype == np.int64
    assert got.shape == (n,)
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(got)) == n
    return got


# ---- C++ == reference ----------------------------------------------------------------------


@given(
    n_points=st.integers(1, 300),
    dim=st.integers(1, 40),
    frac=st.floats(0.0, 1.0),
    projection_dim=st.one_of(st.none(), st.integers(1, 48)),
    seed=st.integers(0, 2**32),
    data_seed=st.integers(0, 2**16),
)
def test_matches_reference_random(
    n_points: int, dim: int, frac: float, projection_dim: int | None, seed: int, data_seed: int
) -> None:
    feats = _features(n_points, dim, data_seed)
    n = max(1, round(frac * n_points))
    _check_same(feats, n, projection_dim=projection_dim, seed=seed)


@given(data_seed=st.integers(0, 2**16), levels=st.integers(1, 4))
def test_matches_reference_with_many_ties(data_seed: int, levels: int) -> None:
    # Integer grid: many exactly equal distances, so tie-breaking is exercised.
    rng = np.random.default_rng(data_seed)
    feats = rng.integers(0, levels + 1, size=(120, 3)).astype(np.float32)
    _check_same(feats, 120, projection_dim=None, seed=data_seed)


def test_canonical_distance_matches_reference() -> None:
    for dim in (1, 7, 16, 31, 128, 130):
        pts = _features(257, dim, dim)
        center = pts[5].copy()
        np.testing.assert_array_equal(
            _core.coreset_distances(pts, center), squared_distances(pts, center)
        )


def test_large_projected_default() -> None:
    feats = _features(3000, 300, 7)
    _check_same(feats, 200)  # projection_dim=128, float16 path


# ---- edge cases ----------------------------------------------------------------------------


def test_n_one_is_the_seeded_start() -> None:
    feats = _features(50, 4)
    got = _check_same(feats, 1, seed=3)
    assert got[0] == np.random.default_rng(3).integers(50)


def test_n_equals_n_points_is_permutation() -> None:
    feats = _features(200, 5)
    got = _check_same(feats, 200, projection_dim=None)
    np.testing.assert_array_equal(np.sort(got), np.arange(200))


def test_single_point() -> None:
    np.testing.assert_array_equal(kernels.coreset(np.ones((1, 3), np.float32), 1), [0])


def test_duplicates_are_selected_last_in_index_order() -> None:
    base = _features(5, 3)
    feats = np.concatenate([base, base, base])  # rows i, i+5, i+10 identical
    got = _check_same(feats, 15, projection_dim=None, seed=1)
    first = got[:5]
    assert sorted(first % 5) == list(range(5))  # one copy of each distinct row first
    rest = got[5:]
    np.testing.assert_array_equal(rest, np.sort(rest))  # then zeros: lowest index first


def test_constant_features() -> None:
    feats = np.full((30, 8), 2.5, np.float32)
    got = _check_same(feats, 30, seed=4)
    start = np.random.default_rng(4).integers(30)
    np.testing.assert_array_equal(got, [start, *[i for i in range(30) if i != start]])


def test_dim_one() -> None:
    feats = np.arange(10, dtype=np.float32)[:, None]
    got = _check_same(feats, 4, seed=0).tolist()
    start = int(np.random.default_rng(0).integers(10))
    want = [start]
    for _ in range(3):  # plain greedy with exact integer distances, lowest index on ties
        dist = [min(abs(i - j) for j in want) for i in range(10)]
        want.append(max(range(10), key=lambda i: (dist[i], -i)))
    assert got == want


@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1.0, 1e20, 1e30])
def test_huge_and_tiny_magnitudes(scale: float) -> None:
    feats = _features(400, 20, 2)
    base = kernels.coreset(feats, 60, projection_dim=None)
    scaled = (feats.astype(np.float64) * scale).astype(np.float32)
    got = _check_same(scaled, 60, projection_dim=None)
    if scale in (1e-20, 1.0, 1e20):  # rounding of x*scale may move exact near-ties otherwise
        np.testing.assert_array_equal(got, base)
    _check_same(scaled, 60, projection_dim=8)  # projected path: pre-scaled before the GEMM


def test_power_of_two_scale_changes_nothing() -> None:
    feats = _features(500, 40, 5)
    base = kernels.coreset(feats, 80)
    for e in (-100, -3, 7, 90):
        np.testing.assert_array_equal(kernels.coreset(np.ldexp(feats, e), 80), base)


def test_float64_and_non_contiguous_are_converted() -> None:
    feats = _features(300, 24, 3)
    want = kernels.coreset(feats, 40, projection_dim=8)
    np.testing.assert_array_equal(
        kernels.coreset(feats.astype(np.float64), 40, projection_dim=8), want
    )
    wide = np.zeros((300, 48), np.float32)
    wide[:, ::2] = feats
    assert not wide[:, ::2].flags.c_contiguous
    np.testing.assert_array_equal(kernels.coreset(wide[:, ::2], 40, projection_dim=8), want)
    np.testing.assert_array_equal(reference.coreset(wide[:, ::2], 40, projection_dim=8), want)


def test_core_rejects_what_kernels_convert() -> None:
    feats = np.zeros((10, 4), np.float32)
    with pytest.raises(TypeError):
        _core.coreset(feats.astype(np.float64), 2, 0, 1)
    with pytest.raises(TypeError):
        _core.coreset(np.asfortranarray(np.zeros((10, 4), np.float32))[:, ::2], 2, 0, 1)
    with pytest.raises(ValueError, match="start"):
        _core.coreset(feats, 2, 10, 1)
    with pytest.raises(ValueError, match="n must"):
        _core.coreset(feats, 11, 0, 1)


# ---- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize("impl", [kernels.coreset, reference.coreset])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rejected(impl, bad: float) -> None:
    feats = _features(10, 3)
    feats[4, 1] = bad
    with pytest.raises(ValueError, match="features"):
        impl(feats, 2)


@pytest.mark.parametrize("impl", [kernels.coreset, reference.coreset])
def test_bad_arguments(impl) -> None:
    feats = _features(10, 3)
    for bad_dtype in (np.int32, np.bool_, np.complex64):
        with pytest.raises(TypeError, match="features"):
            impl(feats.astype(bad_dtype), 2)
    with pytest.raises(ValueError, match="features"):
        impl(feats[0], 1)
    with pytest.raises(ValueError, match="features"):
        impl(np.zeros((0, 3), np.float32), 1)
    with pytest.raises(ValueError, match="features"):
        impl(np.zeros((4, 0), np.float32), 1)
    for n in (0, 11, -1):
        with pytest.raises(ValueError, match="n must"):
            impl(feats, n)
    for n in (2.0, True, "2"):
        with pytest.raises(TypeError, match="n must"):
            impl(feats, n)
    with pytest.raises(ValueError, match="projection_dim"):
        impl(feats, 2, projection_dim=0)
    with pytest.raises(TypeError, match="projection_dim"):
        impl(feats, 2, projection_dim=2.5)
    with pytest.raises(ValueError, match="seed"):
        impl(feats, 2, seed=-1)
    with pytest.raises(TypeError, match="seed"):
        impl(feats, 2, seed=None)
    with pytest.raises(ValueError, match="threads"):
        impl(feats, 2, threads=0)


# ---- determinism and threads ---------------------------------------------------------------


def test_seeds() -> None:
    feats = _features(2000, 64, 9)
    a = kernels.coreset(feats, 100, seed=1)
    np.testing.assert_array_equal(a, kernels.coreset(feats, 100, seed=1))
    assert not np.array_equal(a, kernels.coreset(feats, 100, seed=2))
    p1 = prepare_points(feats, 32, 1).points
    p2 = prepare_points(feats, 32, 2).points
    assert not np.array_equal(p1, p2)


def test_threads_one_vs_two() -> None:
    # Large enough (>= 2 * 8192 points) for the C++ core to really use two threads.
    feats = _features(40_000, 32, 11)
    one = kernels.coreset(feats, 300, projection_dim=16, threads=1)
    two = kernels.coreset(feats, 300, projection_dim=16, threads=2)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one, reference.coreset(feats, 300, projection_dim=16)[:300])
    # Rows i and i + 9000 identical: once every distinct row is selected, all remaining
    # distances are 0, tied across the two threads' chunks -> lowest index first.
    dup = np.concatenate([feats[:9000, :4]] * 2)
    one = kernels.coreset(dup, 9050, projection_dim=None, threads=1)
    np.testing.assert_array_equal(one, kernels.coreset(dup, 9050, projection_dim=None, threads=2))
    np.testing.assert_array_equal(one[9000:], np.sort(one[9000:]))


def test_concurrent_python_threads() -> None:
    inputs = [(_features(20_000, 48, s), 150, s) for s in range(4)]
    sequential = [kernels.coreset(f, n, seed=s, threads=2) for f, n, s in inputs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(
            pool.map(lambda a: kernels.coreset(a[0], a[1], seed=a[2], threads=2), inputs * 2)
        )
    for got, want in zip(parallel, sequential * 2, strict=True):
        np.testing.assert_array_equal(got, want)


# ---- the k-center property -----------------------------------------------------------------


def _radii(points: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Covering radius (max over points of the distance to the nearest selected) per prefix."""
    d = np.sqrt(((points[:, None, :] - points[None, order, :]) ** 2).sum(-1))  # (N, n)
    return np.minimum.accumulate(d, axis=1).max(axis=0)


@given(data_seed=st.integers(0, 2**16), n_points=st.integers(2, 9), k=st.integers(1, 4))
def test_two_approximation_against_brute_force(data_seed: int, n_points: int, k: int) -> None:
    k = min(k, n_points)
    feats = _features(n_points, 3, data_seed).astype(np.float64)
    got = kernels.coreset(feats, k, projection_dim=None, seed=data_seed)
    radius = _radii(feats, got)[-1]
    optimal = min(
        _radii(feats, np.array(c))[-1] for c in itertools.combinations(range(n_points), k)
    )
    assert radius <= 2 * optimal * (1 + 1e-5) + 1e-6


def test_radius_non_increasing_and_greedy() -> None:
    feats = _features(400, 6, 13).astype(np.float64)
    order = kernels.coreset(feats, 60, projection_dim=None)
    radii = _radii(feats, order)
    assert np.all(np.diff(radii) <= 1e-6)
    # Each pick is (up to float32 rounding) the point farthest from the earlier picks.
    d = np.sqrt(((feats[:, None, :] - feats[None, order, :]) ** 2).sum(-1))
    nearest = np.minimum.accumulate(d, axis=1)
    for t in range(1, 60):
        assert nearest[order[t], t - 1] >= radii[t - 1] * (1 - 1e-5)


# ---- triangle-inequality pruning (mode 2) == full passes (mode 1) ---------------------------


def _blobs(n_points: int, dim: int, n_blobs: int, seed: int, spread: float = 0.3) -> np.ndarray:
    """Clustered points (where pruning skips groups): Gaussian blobs around random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_blobs, dim)) * 10
    labels = rng.integers(0, n_blobs, n_points)
    return (centres[labels] + spread * rng.standard_normal((n_points, dim))).astype(np.float32)


def _modes(points: np.ndarray, n: int, start: int, threads: int = 1) -> dict[int, tuple]:
    """Indices and counters of the three modes (0 auto, 1 full passes, 2 pruned)."""
    run = _core.coreset_ex if points.dtype == np.float32 else _core.coreset_f16_ex
    pts = points if points.dtype == np.float32 else points.view(np.uint16)
    return {mode: run(pts, n, start, threads, mode) for mode in (0, 1, 2)}


def test_pruned_path_matches_reference_on_blobs() -> None:
    feats = _blobs(6000, 24, 30, seed=3)
    for projection_dim in (None, 16):  # float32 and float16 points
        want = reference.coreset(feats, 400, projection_dim=projection_dim, seed=5)
        prepared = prepare_points(feats, projection_dim, 5)
        runs = _modes(prepared.points, 400, prepared.start)
        for mode, (got, _) in runs.items():
            np.testing.assert_array_equal(got, want, err_msg=f"mode {mode}")
        stats = runs[2][1]
        assert stats["pruned_steps"] == 398 and stats["full_passes"] == 1
        assert stats["groups_skipped"] > 0  # the pruned path ran and skipped work
        assert stats["points_evaluated"] < 0.5 * 398 * 6000
        assert runs[0][1] == stats  # auto keeps pruning on clustered data
        assert runs[1][1]["pruned_steps"] == 0
        # The public function (auto) gives the same result.
        np.testing.assert_array_equal(
            kernels.coreset(feats, 400, projection_dim=projection_dim, seed=5), want
        )


def test_pruned_threads_one_vs_two() -> None:
    feats = _blobs(30_000, 16, 12, seed=4, spread=1.0)
    prepared = prepare_points(feats, None, 0)
    one, s1 = _core.coreset_ex(prepared.points, 1500, prepared.start, 1, 2)
    two, s2 = _core.coreset_ex(prepared.points, 1500, prepared.start, 2, 2)
    np.testing.assert_array_equal(one, two)
    assert s1 == s2 and s1["groups_skipped"] > 0
    full, _ = _core.coreset_ex(prepared.points, 1500, prepared.start, 1, 1)
    np.testing.assert_array_equal(one, full)


@given(
    n_points=st.integers(1, 200),
    dim=st.integers(1, 20),
    frac=st.floats(0.0, 1.0),
    n_blobs=st.integers(1, 8),
    spread=st.sampled_from([0.0, 1e-3, 0.3, 3.0]),
    data_seed=st.integers(0, 2**16),
    f16=st.booleans(),
)
def test_pruned_equals_full_random(
    n_points: int, dim: int, frac: float, n_blobs: int, spread: float, data_seed: int, f16: bool
) -> None:
    feats = _blobs(n_points, dim, n_blobs, data_seed, spread)
    if f16:
        feats = feats.astype(np.float16)
    n = max(1, round(frac * n_points))
    start = data_seed % n_points
    runs = _modes(feats, n, start, threads=2)
    np.testing.assert_array_equal(runs[2][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][0], runs[1][0])


@given(data_seed=st.integers(0, 2**16), levels=st.integers(1, 4), dim=st.integers(1, 3))
def test_pruned_equals_full_with_exact_ties(data_seed: int, levels: int, dim: int) -> None:
    # Integer grids: many distances equal, and points exactly at the skip threshold (x between
    # s and c with e(s, c) = 2 e(x, s)), which the safety margin must leave to be evaluated.
    rng = np.random.default_rng(data_seed)
    feats = rng.integers(0, levels + 1, size=(150, dim)).astype(np.float32)
    runs = _modes(feats, 150, data_seed % 150)
    np.testing.assert_array_equal(runs[2][0], runs[1][0])
    line = np.arange(0, 64, dtype=np.float32)[:, None] * np.float32(2.0 ** (data_seed % 40 - 20))
    runs = _modes(line, 64, 0)
    np.testing.assert_array_equal(runs[2][0], runs[1][0])


def test_auto_falls_back_to_full_passes_on_gaussian() -> None:
    # 64-d Gaussian: distances concentrate, pruning cannot pay; auto gives up after 40 steps.
    feats = _features(8192, 64, 2)
    got, stats = _core.coreset_ex(feats, 200, 0, 1, 0)
    np.testing.assert_array_equal(got, _core.coreset_ex(feats, 200, 0, 1, 1)[0])
    assert stats["pruned_steps"] == 40 and stats["full_passes"] == 200 - 1 - 40


def test_bad_mode_rejected() -> None:
    with pytest.raises(ValueError, match="mode"):
        _core.coreset_ex(np.zeros((4, 2), np.float32), 2, 0, 1, 3)
