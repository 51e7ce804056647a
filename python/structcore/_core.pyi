# Type stub of the private compiled module (generated with pybind11-stubgen, then checked).
# Use the validated wrappers in structcore.kernels; these functions do no conversion.
"""
structcore C++ kernels (private: use structcore.kernels for validated access)
"""

from __future__ import annotations

import typing

import numpy
import numpy.typing

__all__: list[str] = [
    "ANOMALY_MAP_MAX_ELEMENTS",
    "ANOMALY_MAP_MAX_SIDE",
    "ANOMALY_MAP_MAX_SIGMA",
    "Scorer",
    "anomaly_map",
    "anomaly_map_into",
    "build_info",
    "c_abi_version",
    "coreset",
    "coreset_distances",
    "coreset_ex",
    "coreset_f16",
    "coreset_f16_ex",
    "describe",
    "descriptor_codes",
    "has_openmp",
    "knn",
    "knn_amx_emulated",
    "knn_dispatch",
    "knn_f16",
    "knn_info",
    "simd_level",
    "version",
]

class Scorer:
    """
    A model saved by Detector.save, loaded by the C++ core.
    """
    @staticmethod
    def from_bytes(data: bytes) -> Scorer:
        """
        Load a model from the bytes of a model file.
        """
    def __init__(self, path: str) -> None:
        """
        Load the model file at path (ValueError when malformed).
        """
    def score(
        self,
        features: numpy.typing.NDArray[numpy.float32],
        threads: typing.SupportsInt | typing.SupportsIndex,
    ) -> dict:
        """
        Score features (B, h, w, dim) float32 C-contiguous with threads (<= 0: all) -> dict
        of maps (B, crop, crop) float32, score_max, score_struct, score (B,) float64,
        descriptor, z (B, F) float64, is_anomalous (B,) bool. Unvalidated: use
        structcore.scorer.Scorer.
        """
    @property
    def info(self) -> dict:
        """
        What the model file says about itself (a dict).
        """

def anomaly_map(
    patch_scores: numpy.typing.NDArray[numpy.float32],
    height: typing.SupportsInt | typing.SupportsIndex,
    width: typing.SupportsInt | typing.SupportsIndex,
    sigma: typing.SupportsFloat | typing.SupportsIndex,
    threads: typing.SupportsInt | typing.SupportsIndex,
) -> numpy.typing.NDArray[numpy.float32]:
    """
    Bilinear resize (torch align_corners=False) + Gaussian blur (scipy, reflect) of (n_maps, h, w) float32 C-contiguous patch scores to (n_maps, height, width) float32. Private: use structcore.kernels.anomaly_map.
    """

def anomaly_map_into(
    patch_scores: numpy.typing.NDArray[numpy.float32],
    out: numpy.typing.NDArray[numpy.float32],
    sigma: typing.SupportsFloat | typing.SupportsIndex,
    threads: typing.SupportsInt | typing.SupportsIndex,
) -> None:
    """
    anomaly_map writing into out, an (n_maps, height, width) float32 C-contiguous writeable array. Private: use structcore.kernels.anomaly_map(out=...).
    """

def build_info() -> str:
    """
    One-line description of the build: version, compiler, OpenMP, SIMD level.
    """

def c_abi_version() -> int:
    """
    STRUCTCORE_ABI_VERSION of the C ABI (structcore.h) compiled into this module.
    """

def coreset(
    points: numpy.typing.NDArray[numpy.float32],
    n: typing.SupportsInt | typing.SupportsIndex,
    start: typing.SupportsInt | typing.SupportsIndex,
    threads: typing.SupportsInt | typing.SupportsIndex,
) -> numpy.typing.NDArray[numpy.int64]:
    """
    Greedy k-center selection on float32 points (n_points, dim), C-contiguous, finite, max |x| < 2**15. Returns n int64 indices in selection order, the first being start.
    """

def coreset_distances(
    points: numpy.typing.NDArray[numpy.float32], center: numpy.typing.NDArray[numpy.float32]
) -> numpy.typing.NDArray[numpy.float32]:
    """
    Canonical squared distances (coreset.hpp) from center to every row; for tests.
    """

def coreset_ex(
    points: numpy.typing.NDArray[numpy.float32],
    n: typing.SupportsInt | typing.SupportsIndex,
    start: typing.SupportsInt | typing.SupportsIndex,
    threads: typing.SupportsInt | typing.SupportsIndex,
    mode: typing.SupportsInt | typing.SupportsIndex,
) -> tuple[numpy.typing.NDArray[numpy.int64], dict[str, int]]:
    """
    As coreset with mode 0 (auto), 1 (full passes) or 2 (pruned); returns (indices, work counters dict). For tests and benchmarks.
    """

def coreset_f16_ex(
    points: numpy.typing.NDArray[numpy.uint16],
    n: typing.SupportsInt | typing.SupportsIndex,
    start: typing.SupportsInt | typing.SupportsIndex,
    threads: typing.SupportsInt | typing.SupportsIndex,
    mode: typing.SupportsInt | typing.SupportsIndex,
) -> tuple[numpy.typing.NDArray[numpy.int64], dict[str, int]]:
    """
    As coreset_ex on float16 points passed as their uint16 bit patterns.
    """

def coreset_f16(
    points: numpy.typing.NDArray[numpy.uint16],
    n: typing.SupportsInt | typing.SupportsIndex,
    start: typing.SupportsInt | typing.SupportsIndex,
    threads: typing.SupportsInt | typing.SupportsIndex,
) -> numpy.typing.NDArray[numpy.int64]:
    """
    As coreset, on float16 points passed as their uint16 bit patterns (numpy: points16.view(numpy.uint16)).
    """

def describe(
    maps: numpy.typing.NDArray[numpy.float32],
    codes: numpy.typing.NDArray[numpy.int32],
    quantiles: numpy.typing.NDArray[numpy.float64],
    top_k: typing.SupportsInt | typing.SupportsIndex,
    threshold: typing.SupportsFloat | typing.SupportsIndex | None,
    connectivity: typing.SupportsInt | typing.SupportsIndex,
    threads: typing.SupportsInt | typing.SupportsIndex,
) -> numpy.typing.NDArray[numpy.float64]:
    """
    Structural descriptor of each map: maps (B, H, W) float32 C-contiguous, codes (F,) int32,
    quantiles (F,) float64 (read for quantile codes), top_k in [1, H*W], threshold float or
    None, connectivity 4 or 8, threads (<= 0: all) -> phi (B, F) float64. Unvalidated: use
    structcore.kernels.describe.
    """

def descriptor_codes() -> dict:
    """
    {name: (code, needs_threshold)} for every describe() component code.
    """

def has_openmp() -> bool:
    """
    True when built with OpenMP.
    """

def knn(
    queries: numpy.typing.NDArray[numpy.float32],
    bank: numpy.typing.NDArray[numpy.float32],
    k: typing.SupportsInt | typing.SupportsIndex,
    threads: typing.SupportsInt | typing.SupportsIndex = 0,
    level: str = "",
) -> tuple[numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.int64]]:
    """
    Exact kNN, float32 bank (no validation of finiteness: use structcore.kernels.knn). queries (Q, D) float32 C-contiguous, bank (M, D) float32 C-contiguous, 1 <= k <= M; returns (distances (Q, k) float32 ascending, indices (Q, k) int64). threads <= 0: all. level: '' (auto: knn_info(k)['candidates'], chosen per CPU and STRUCTCORE_SIMD), 'scalar', 'avx2' or 'avx512' (float32 path, clamped to the CPU), 'avx512bf16' or 'amx' (bf16 candidate pass + exact re-ranking; ValueError on CPUs without it).
    """

def knn_f16(
    queries: numpy.typing.NDArray[numpy.float32],
    bank: numpy.typing.NDArray[numpy.uint16],
    k: typing.SupportsInt | typing.SupportsIndex,
    threads: typing.SupportsInt | typing.SupportsIndex = 0,
    level: str = "",
) -> tuple[numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.int64]]:
    """
    As knn with the bank given as the raw bits of a float16 array (bank.view(np.uint16)).
    """

def knn_amx_emulated(
    queries: numpy.typing.NDArray[numpy.float32],
    bank: numpy.typing.NDArray[numpy.float32],
    k: typing.SupportsInt | typing.SupportsIndex,
    threads: typing.SupportsInt | typing.SupportsIndex = 0,
) -> tuple[numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.int64]]:
    """
    Test hook: the AMX candidate pass with its tile instructions emulated in scalar code (checks the AMX pass's layouts and offsets on any AVX-512 BF16 CPU; slow).
    """

def knn_dispatch(
    features: dict,
    request: str = "",
    k: typing.SupportsInt | typing.SupportsIndex = 1,
    amx_built: bool | None = None,
) -> dict:
    """
    The pure dispatch decision (knn_choose) for a made-up CPU: features is a dict of knn_info()['cpu'] keys (missing: False / 0), request a STRUCTCORE_SIMD value. For tests.
    """

def knn_info(k: typing.SupportsInt | typing.SupportsIndex = 1) -> dict:
    """
    The kNN path structcore.kernels.knn takes here for this k: {'candidates', 'f32', 'tile', 'kc', 'reason', 'cpu' (cpuid/XCR0 features), 'amx_built', 'request' (STRUCTCORE_SIMD)}.
    """

def simd_level() -> str:
    """
    The SIMD level kernels dispatch to: 'scalar', 'avx2' or 'avx512'.
    """

def version() -> str:
    """
    Version of the C++ core.
    """

ANOMALY_MAP_MAX_ELEMENTS: int = 1073741824
ANOMALY_MAP_MAX_SIDE: int = 16384
ANOMALY_MAP_MAX_SIGMA: float = 1000.0
