"""NumPy/SciPy reference of :func:`structcore.kernels.anomaly_map` (the test oracle)."""

from __future__ import annotations

import numpy as np

from ..kernels.anomaly_map import _check_out, _validate

__all__ = ["anomaly_map"]


def _bilinear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch's bilinear taps along one axis (align_corners=False).

    Returns ``(i0, i1, l0, l1)``, each of shape (n_out,): output ``o`` is
    ``l0[o] * x[i0[o]] + l1[o] * x[i1[o]]``. The source coordinate is computed in float32
    with the same operations as ATen (``ratio * (o + 0.5) - 0.5`` in float32 with a single
    rounding, as its vectorised CPU kernels fuse it; clamped at 0).
    """
    o = np.arange(n_out)
    if n_in == n_out:  # ATen copies the axis
        return o, o, np.ones(n_out, np.float32), np.zeros(n_out, np.float32)
    ratio = np.float32(n_in) / np.float32(n_out)
    # One rounding of ratio * (o + 0.5) - 0.5, as ATen's AVX2/AVX-512 CPU kernels (fused
    # multiply-add); the float64 expression is exact, so rounding it to float32 equals the FMA.
    src = (np.float64(ratio) * (o + 0.5) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    l1 = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0))
    i1 = np.where(i0 < n_in - 1, i0 + 1, i0)
    return i0, i1, np.float32(1.0) - l1, l1


def anomaly_map(
    patch_scores: object,
    size: int | tuple[int, int],
    *,
    sigma: float = 4.0,
    threads: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Bilinear upsampling then Gaussian blur, written out in NumPy + SciPy.

    Same signature, validation and semantics as :func:`structcore.kernels.anomaly_map`
    (``threads`` is validated and ignored). The bilinear index/weight tables are computed
    explicitly (:func:`_bilinear_taps`), the interpolation and
    ``scipy.ndimage.gaussian_filter(mode="reflect", truncate=4.0)`` run in float64, and the
    result is rounded once to float32.

    Parameters
    ----------
    patch_scores : ndarray of shape (n_maps, h, w) or (h, w), float32
        Patch scores, finite.
    size : int or (int, int)
        Output size ``(H, W)`` in pixels.
    sigma : float, default 4.0
        Gaussian standard deviation in output pixels; 0 means no blur.
    threads : int or None
        Accepted for signature compatibility; unused.
    out : ndarray of shape (n_maps, H, W) or (H, W), float32, optional
        Written with the result and returned (same checks as the kernel's ``out``).

    Returns
    -------
    maps : ndarray of shape (n_maps, H, W) or (H, W), float32

    Examples
    --------
    >>> import numpy as np
    >>> from structcore.reference import anomaly_map
    >>> anomaly_map(np.array([[0.0, 1.0]], np.float32), (1, 4), sigma=0).tolist()
    [[0.0, 0.25, 0.75, 1.0]]
    """
    scores, was_2d, height, width, sig, _ = _validate(patch_scores, size, sigma, threads)
    if out is not None:
        _check_out(out, scores, was_2d, height, width)
    x = scores.astype(np.float64)
    i0, i1, l0, l1 = _bilinear_taps(x.shape[1], height)
    x = x[:, i0, :] * l0[None, :, None] + x[:, i1, :] * l1[None, :, None]
    i0, i1, l0, l1 = _bilinear_taps(x.shape[2], width)
    x = x[:, :, i0] * l0[None, None, :] + x[:, :, i1] * l1[None, None, :]
    if sig > 0:
        from scipy import ndimage  # here, not at import: `import structcore` stays scipy-free

        x = ndimage.gaussian_filter(x, sigma=(0.0, sig, sig), mode="reflect", truncate=4.0)
    maps = x.astype(np.float32)
    if out is not None:
        out[...] = maps[0] if was_2d else maps
        return out
    return maps[0] if was_2d else maps
