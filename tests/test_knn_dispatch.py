"""kNN dispatch: the pure decision (made-up CPUs, so AMX is covered on any machine), forced
levels through STRUCTCORE_SIMD, and the AMX candidate pass (emulated here; real where the CPU
has AMX) against the float32 path."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import structcore
from structcore import _core, reference

INFO = _core.knn_info()
CPU = INFO["cpu"]
HAS_BF16 = "+bf16" in _core.build_info()
HAS_AMX = INFO["candidates"] == "amx" or (
    CPU["amx_tile"]
    and CPU["amx_bf16"]
    and CPU["os_amx"]
    and CPU["amx_permitted"]
    and HAS_BF16
    and INFO["amx_built"]
)
CAN_EMULATE_AMX = HAS_BF16 and INFO["amx_built"]

_AVX2 = {"avx2": True, "fma": True, "f16c": True, "os_avx": True}
_AVX512 = {
    **_AVX2,
    "avx512f": True,
    "avx512bw": True,
    "avx512dq": True,
    "avx512vl": True,
    "os_avx512": True,
}
ZEN4 = {
    "vendor": "AuthenticAMD",
    "family": 25,
    "model": 17,
    "l1d_kib": 32,
    **_AVX512,
    "avx512_bf16": True,
}
SAPPHIRE_RAPIDS = {
    "vendor": "GenuineIntel",
    "family": 6,
    "model": 143,
    "l1d_kib": 48,
    **_AVX512,
    "avx512_bf16": True,
    "amx_tile": True,
    "amx_bf16": True,
    "amx_int8": True,
    "os_amx": True,
    "amx_permitted": True,
}
ICE_LAKE = {"vendor": "GenuineIntel", "family": 6, "model": 106, "l1d_kib": 48, **_AVX512}
HASWELL = {"vendor": "GenuineIntel", "family": 6, "model": 60, "l1d_kib": 32, **_AVX2}
OLD = {"vendor": "GenuineIntel", "family": 6, "model": 23}
ORDER = ["scalar", "avx2", "avx512", "avx512bf16", "amx"]


def choose(features: dict, request: str = "", k: int = 1, amx_built: bool = True) -> dict:
    return _core.knn_dispatch(features, request, k, amx_built)


# ---------------------------------------------------------------------------------------
# the pure decision


@pytest.mark.parametrize(
    ("features", "expected", "tile"),
    [
        (SAPPHIRE_RAPIDS, "amx", "32x32 (2x2 AMX tiles of 16x16)"),
        (ZEN4, "avx512bf16", "14x32"),
        (ICE_LAKE, "avx512", "14x32"),
        (HASWELL, "avx2", "6x16"),
        (OLD, "scalar", "4x8"),
        ({}, "scalar", "4x8"),
    ],
)
def test_default_choice_per_cpu(features, expected, tile):
    c = choose(features)
    assert c["candidates"] == expected
    assert c["tile"] == tile
    assert c["reason"]
    assert c["f32"] == {"amx": "avx512", "avx512bf16": "avx512"}.get(expected, expected)


def test_amx_needs_every_condition():
    # cpuid bits, the OS state (XCR0), the process permission, AVX-512 BF16 and the build
    for missing, words in [
        ("amx_tile", "AMX-TILE"),
        ("amx_bf16", "AMX-BF16"),
        ("os_amx", "XCR0"),
        ("amx_permitted", "arch_prctl"),
        ("avx512_bf16", "AVX-512 BF16"),
    ]:
        c = choose({**SAPPHIRE_RAPIDS, missing: False})
        assert c["candidates"] == ("avx512bf16" if missing != "avx512_bf16" else "avx512"), missing
        assert words in c["reason"] or missing == "avx512_bf16", (missing, c["reason"])
    c = choose(SAPPHIRE_RAPIDS, amx_built=False)
    assert c["candidates"] == "avx512bf16" and "build" in c["reason"]
    # AVX-512 state not enabled by the OS: no AVX-512 path at all
    assert choose({**SAPPHIRE_RAPIDS, "os_avx512": False})["candidates"] == "avx2"


@pytest.mark.parametrize("features", [SAPPHIRE_RAPIDS, ZEN4, ICE_LAKE, HASWELL, OLD])
@pytest.mark.parametrize("request_", ORDER)
def test_requests_only_lower(features, request_):
    # A request never raises the level above the CPU's, and never above itself; a level
    # the CPU lacks falls back (with a note) to the widest one below it.
    best = choose(features)["candidates"]
    c = choose(features, request_)
    got = ORDER.index(c["candidates"])
    assert got <= ORDER.index(request_)
    assert got <= ORDER.index(best)
    if ORDER.index(request_) <= ORDER.index(best) and not (
        request_ == "avx512bf16" and best == "avx512"
    ):
        assert c["candidates"] == request_
    if ORDER.index(request_) > ORDER.index(best):
        assert "unavailable" in c["reason"] and "lowered" in c["reason"]


def test_request_names_and_k():
    c = choose(ZEN4, "bogus")
    assert c["candidates"] == "avx512bf16" and "not a level" in c["reason"]
    # bf16 candidate lists grow with k: long lists go to the float32 pass
    for feats in (ZEN4, SAPPHIRE_RAPIDS):
        assert choose(feats, k=64)["candidates"] in ("avx512bf16", "amx")
        c = choose(feats, k=65)
        assert c["candidates"] == "avx512" and "k > 64" in c["reason"]
    with pytest.raises(ValueError, match="unknown CPU feature"):
        choose({"avx1024": True})


def test_f32_depth_chunk_per_vendor():
    assert choose(ZEN4, "avx512")["kc"] == 256  # measured on Zen 4
    assert choose(SAPPHIRE_RAPIDS, "avx512")["kc"] == 128  # L1-resident bank micro-panel
    assert choose(ICE_LAKE)["kc"] == 128
    assert choose(HASWELL)["kc"] == 256


def test_this_cpu_info_consistent():
    assert INFO["candidates"] in ORDER
    assert INFO["candidates"] == _core.knn_dispatch(CPU, INFO["request"], 1)["candidates"]
    info = _core.build_info()
    assert "knn candidates " + INFO["candidates"] in info
    assert ("+bf16" in info) == (CPU["avx512_bf16"] and _core.simd_level() == "avx512")
    if not (CPU["amx_tile"] and CPU["os_amx"]):
        assert not CPU["amx_permitted"]  # permission is only requested where AMX exists


# ---------------------------------------------------------------------------------------
# forced levels through the environment: never SIGILL, results as the reference

_FORCED = r"""
import json, sys, numpy as np
from structcore import _core, reference
from structcore.kernels import knn
rng = np.random.default_rng(0)
b = rng.standard_normal((700, 77), dtype=np.float32)
q = rng.standard_normal((50, 77), dtype=np.float32)
out = {"info": _core.knn_info(3)}
d, i = knn(q, b, 3)
rd, ri = reference.knn(q, b, 3)
out["equal"] = bool((i == ri).all())
out["dist_ok"] = bool(np.allclose(d, rd, rtol=1e-6, atol=0))
d16, i16 = knn(q, b.astype(np.float16), 3)
rd16, ri16 = reference.knn(q, b.astype(np.float16), 3)
out["equal16"] = bool((i16 == ri16).all())
print(json.dumps(out))
"""


@pytest.mark.parametrize("level", ORDER)
def test_forced_level_runs_and_matches_reference(level):
    env = dict(os.environ, STRUCTCORE_SIMD=level)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(structcore.__file__)), env.get("PYTHONPATH", "")]
    )
    res = subprocess.run(
        [sys.executable, "-c", _FORCED], env=env, capture_output=True, text=True, check=True
    )
    out = json.loads(res.stdout)
    got = out["info"]["candidates"]
    assert ORDER.index(got) <= ORDER.index(level)
    assert got == _core.knn_dispatch(CPU, level, 3)["candidates"]
    # Gaussian data, no near-ties at this size: every level returns the exact answer
    assert out["equal"] and out["dist_ok"] and out["equal16"], out


# ---------------------------------------------------------------------------------------
# the AMX pass: emulated tiles here (layouts, offsets, padding), real tiles where present


def patchcore_like(seed: int, n_b: int, n_q: int, dim: int):
    rng = np.random.default_rng(seed)
    centres = (10.0 + 0.5 * rng.standard_normal((30, dim))).clip(0)
    b = centres[rng.integers(0, 30, n_b)] + 0.05 * rng.standard_normal((n_b, dim))
    q = centres[rng.integers(0, 30, n_q)] + 0.05 * rng.standard_normal((n_q, dim))
    return q.clip(0).astype(np.float32), b.clip(0).astype(np.float32)


AMX_SHAPES = [
    (1, 1, 1, 1),
    (5, 7, 3, 3),
    (31, 33, 31, 4),
    (33, 65, 32, 9),
    (40, 300, 33, 5),
    (70, 257, 64, 1),
    (2, 40, 65, 2),
    (100, 520, 300, 9),
]


def assert_same(a, b):
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.skipif(not CAN_EMULATE_AMX, reason="needs AVX-512 BF16 and an AMX-capable build")
@pytest.mark.parametrize(("n_q", "n_b", "dim", "k"), AMX_SHAPES)
def test_amx_emulated_matches_bf16_and_reference(n_q, n_b, dim, k):
    rng = np.random.default_rng(n_q * 7 + dim)
    q = rng.standard_normal((n_q, dim), dtype=np.float32)
    b = rng.standard_normal((n_b, dim), dtype=np.float32)
    got = _core.knn_amx_emulated(q, b, k, 2)
    assert_same(got, _core.knn(q, b, k, 2, "avx512bf16"))
    ref_d, ref_i = reference.knn(q, b, k)
    np.testing.assert_array_equal(got[1], ref_i)
    np.testing.assert_allclose(got[0], ref_d, rtol=1e-6, atol=0)
    assert_same(got, _core.knn_amx_emulated(q, b, k, 1))  # thread count independent


@pytest.mark.skipif(not CAN_EMULATE_AMX, reason="needs AVX-512 BF16 and an AMX-capable build")
def test_amx_emulated_patchcore_like_and_duplicates():
    q, b = patchcore_like(3, 900, 70, 96)
    b[500:510] = b[:10]
    for k in (1, 9):
        assert_same(_core.knn_amx_emulated(q, b, k, 2), reference.knn(q, b, k))


@pytest.mark.skipif(not CAN_EMULATE_AMX, reason="needs AVX-512 BF16 and an AMX-capable build")
@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    n_q=st.integers(1, 40),
    n_b=st.integers(1, 70),
    dim=st.integers(1, 70),
)
def test_amx_emulated_hypothesis(data, n_q, n_b, dim):
    elems = st.floats(-1e3, 1e3, width=32, allow_nan=False, allow_infinity=False)
    q = data.draw(hnp.arrays(np.float32, (n_q, dim), elements=elems))
    b = data.draw(hnp.arrays(np.float32, (n_b, dim), elements=elems))
    k = data.draw(st.integers(1, min(n_b, 10)))
    assert_same(_core.knn_amx_emulated(q, b, k, 1), _core.knn(q, b, k, 1, "avx512bf16"))


@pytest.mark.skipif(not HAS_AMX, reason=f"no usable AMX-BF16 here: {INFO['reason']}")
@pytest.mark.parametrize("threads", [1, 2])
def test_amx_matches_f32_path(threads):
    # Real tiles. The candidate pass differs from the float32 one, the re-ranking is exact,
    # so on data without near-ties both return the same rows and distances.
    rng = np.random.default_rng(21)
    for n_q, n_b, dim, k in AMX_SHAPES:
        q = rng.standard_normal((n_q, dim), dtype=np.float32)
        b = rng.standard_normal((n_b, dim), dtype=np.float32)
        got = _core.knn(q, b, k, threads, "amx")
        assert_same(got, _core.knn(q, b, k, threads, "avx512bf16"))
        assert_same(got, reference.knn(q, b, k))
        b16 = b.astype(np.float16)
        assert_same(
            _core.knn_f16(q, b16.view(np.uint16), k, threads, "amx"),
            _core.knn_f16(q, b16.view(np.uint16), k, threads, "avx512bf16"),
        )
    q, b = patchcore_like(4, 3000, 300, 512)
    for k in (1, 9):
        assert_same(_core.knn(q, b, k, threads, "amx"), reference.knn(q, b, k))
    # candidate overflow (thousands of equidistant rows) falls back to the float32 pass
    row = rng.standard_normal(48).astype(np.float32)
    bank = np.tile(row, (3000, 1))
    bank[1500] += 1.0
    qq = np.stack([row + 0.01, rng.standard_normal(48).astype(np.float32)])
    assert_same(_core.knn(qq, bank, 4, threads, "amx"), _core.knn(qq, bank, 4, threads, "avx512"))


@pytest.mark.skipif(HAS_AMX, reason="CPU with AMX")
def test_explicit_amx_level_refused_without_amx():
    q = np.ones((2, 4), np.float32)
    b = np.ones((5, 4), np.float32)
    with pytest.raises(ValueError, match="AMX"):
        _core.knn(q, b, 1, 0, "amx")
    with pytest.raises(ValueError, match="AMX"):
        _core.knn_f16(q, b.astype(np.float16).view(np.uint16), 1, 0, "amx")


@pytest.mark.parametrize("kc", ["64", "512", "100", "junk"])
def test_kc_override(kc):
    # STRUCTCORE_KNN_KC retunes the AVX-512 float32 depth chunk (multiples of 32 only);
    # results do not change (the same sums in another chunking, exact re-ranking).
    env = dict(os.environ, STRUCTCORE_KNN_KC=kc, STRUCTCORE_SIMD="avx512")
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(structcore.__file__)), env.get("PYTHONPATH", "")]
    )
    res = subprocess.run(
        [sys.executable, "-c", _FORCED], env=env, capture_output=True, text=True, check=True
    )
    out = json.loads(res.stdout)
    assert out["equal"] and out["dist_ok"] and out["equal16"], out
    if out["info"]["f32"] == "avx512":
        valid = kc in ("64", "512")
        assert (out["info"]["kc"] == int(kc)) if valid else (out["info"]["kc"] in (128, 256))
        assert ("STRUCTCORE_KNN_KC" in out["info"]["reason"]) == valid
