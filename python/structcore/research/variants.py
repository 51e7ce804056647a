"""Image scores computed from anomaly maps: StructCore's and the variants of issue 7.

Every score here is training-free and label-free: it is a function of the test map S, and of
the train-good calibration maps (cross-fitted, ``"crossfit"``, or scored against the bank
that contains them, ``"train"``; METHOD.md §3.5). No test label is used. The maps themselves
are never changed.

Building blocks (pure NumPy, float64 results):

* :func:`center_scale` / :func:`zscores`: per-component centre and scale of calibration
  descriptors (mean/std as the paper, or median/1.4826 MAD), scale floored at
  ``eps * max(1, |centre|)`` like :class:`~structcore.calibration.StructCalibrator`, so a
  degenerate component gives finite z. z is invariant under ``phi -> a * phi + b`` (a > 0)
  applied to calibration and test descriptors alike (away from the floor);
* :func:`distance`: L2 or L-inf norm of z, optionally one-sided (only ``z > 0``, the
  anomalous direction of every component used here, counts) and weighted;
* :func:`auto_lambda` and :func:`hybrid`: ``max + lambda * D`` with the paper's scale matching;
* :func:`topk_mean`: mean of the k largest pixels (k from an expected defect area);
* :func:`reference_maps` / :func:`relative_maps`: per-pixel mean and scale of the calibration
  maps, and the test map relative to them;
* :func:`fold_stability_weights`: component weights from how well a calibration fitted on
  the other folds predicts a held-out fold;
* :func:`residualize`: each component minus its linear prediction from max(S) (fitted on the
  calibration maps), i.e. only the structure that max pooling does not already carry.

:data:`VARIANTS` names every score of the ablation (``bench/accuracy.py``);
:func:`score_variants` evaluates them on a :class:`structcore.research.ablation.MapSet`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..calibration import CalibrationWarning, StructCalibrator

__all__ = [
    "VARIANTS",
    "VariantContext",
    "auto_lambda",
    "center_scale",
    "conditional_residual",
    "distance",
    "fold_stability_weights",
    "hybrid",
    "mahalanobis",
    "novelty_direction",
    "reference_maps",
    "relative_maps",
    "residualize",
    "score_variants",
    "topk_mean",
    "zscores",
]

_MAD_TO_SIGMA = 1.4826


# --------------------------------------------------------------------------- building blocks


def _as2d(x: object, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (n, n_components) array; got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite")
    return a


def center_scale(
    phi_cal: object, *, robust: bool = False, eps: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """Per-component centre and scale of calibration descriptors.

    Parameters
    ----------
    phi_cal : array_like (n_cal, n_components) or (n_cal,)
        Descriptors of the train-good calibration maps.
    robust : bool
        False: mean and population std (the paper). True: median and 1.4826 * MAD.
    eps : float > 0
        Relative floor: ``scale >= eps * max(1, |centre|)``.

    Returns
    -------
    centre, scale : ndarray (n_components,), float64; ``scale > 0``
    """
    a = _as2d(phi_cal, "phi_cal")
    if robust:
        c = np.median(a, axis=0)
        s = _MAD_TO_SIGMA * np.median(np.abs(a - c), axis=0)
    else:
        c = a.mean(axis=0)
        s = a.std(axis=0)
    floor = eps * np.maximum(1.0, np.abs(c))
    return c, np.maximum(s, floor)


def zscores(phi: object, centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(phi - centre) / scale``, float64 of shape (n, n_components)."""
    a = _as2d(phi, "phi")
    if a.shape[1] != np.size(centre):
        raise ValueError(f"phi has {a.shape[1]} components; calibration has {np.size(centre)}")
    return (a - centre) / scale


def distance(
    z: np.ndarray,
    norm: str = "l2",
    *,
    one_sided: bool = False,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Structural distance of z-vectors.

    Parameters
    ----------
    z : ndarray (n, n_components)
    norm : {"l2", "linf"}
        ``||z||_2`` or ``max_i |z_i|``; one-sided: of ``max(z, 0)`` (L-inf one-sided is
        ``max(max_i z_i, 0)``).
    one_sided : bool
        Only the anomalous direction (z > 0) counts.
    weights : ndarray (n_components,) or None
        Non-negative component weights (multiplying z before the norm).

    Returns
    -------
    ndarray (n,), float64, >= 0
    """
    z = np.asarray(z, dtype=np.float64)
    if one_sided:
        z = np.maximum(z, 0.0)
    if weights is not None:
        z = z * np.asarray(weights, dtype=np.float64)
    if norm == "l2":
        return np.sqrt(np.sum(z * z, axis=1))
    if norm == "linf":
        return np.max(np.abs(z), axis=1)
    raise ValueError(f"norm must be 'l2' or 'linf'; got {norm!r}")


def auto_lambda(max_cal: np.ndarray, d_cal: np.ndarray) -> float:
    """The paper's scale matching ``std(max) / std(D)`` over calibration maps (0 if std(D)=0)."""
    sd = float(np.std(d_cal))
    return float(np.std(max_cal)) / sd if sd > 0.0 else 0.0


def hybrid(
    max_test: np.ndarray,
    d_test: np.ndarray,
    max_cal: np.ndarray,
    d_cal: np.ndarray,
    lam: str | float = "auto",
) -> np.ndarray:
    """``max + lambda * D`` with ``lambda`` fixed or scale-matched on the calibration maps."""
    lam_v = auto_lambda(max_cal, d_cal) if lam == "auto" else float(lam)
    return np.asarray(max_test, dtype=np.float64) + lam_v * np.asarray(d_test, dtype=np.float64)


def topk_mean(maps: np.ndarray, k: int) -> np.ndarray:
    """Mean of the ``k`` largest pixels of each map.

    Parameters
    ----------
    maps : ndarray (B, H, W)
    k : int, 1 <= k <= H * W

    Returns
    -------
    ndarray (B,), float64
    """
    m = np.asarray(maps).reshape(np.shape(maps)[0], -1)
    if not 1 <= k <= m.shape[1]:
        raise ValueError(f"k must be in [1, {m.shape[1]}]; got {k}")
    part = np.partition(m, m.shape[1] - k, axis=1)[:, m.shape[1] - k :]
    return part.astype(np.float64).mean(axis=1)


def reference_maps(
    cal_maps: np.ndarray, *, floor_fraction: float = 0.25
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean and scale of train-good calibration maps.

    Parameters
    ----------
    cal_maps : ndarray (n_cal, H, W)
    floor_fraction : float >= 0
        The scale map is floored at ``floor_fraction * median(std map)`` (and at a tiny
        positive value), so flat pixels do not blow up.

    Returns
    -------
    mean, scale : ndarray (H, W), float64
    """
    c = np.asarray(cal_maps, dtype=np.float64)
    mean = c.mean(axis=0)
    std = c.std(axis=0)
    floor = max(floor_fraction * float(np.median(std)), 1e-12)
    return mean, np.maximum(std, floor)


def relative_maps(maps: np.ndarray, mean: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    """``(S - mean) / scale`` per pixel (``scale=None``: ``S - mean``), float32 (B, H, W)."""
    r = np.asarray(maps, dtype=np.float32) - mean.astype(np.float32)
    if scale is not None:
        r = r / scale.astype(np.float32)
    return r


def fold_stability_weights(
    phi_cal: np.ndarray, folds: np.ndarray, *, robust: bool = False
) -> np.ndarray:
    """Component weights ``1 / max(1, mean z^2 on held-out folds)``.

    For every fold, centre and scale come from the other folds and z is computed on the
    held-out one; a component whose held-out z-scores are wider than N(0, 1) (an unstable
    calibration) is down-weighted, a stable one keeps weight 1.

    Parameters
    ----------
    phi_cal : ndarray (n_cal, n_components)
    folds : ndarray (n_cal,), int
        Fold of each calibration row (at least 2 distinct folds).
    robust : bool
        Centre/scale as in :func:`center_scale`.

    Returns
    -------
    ndarray (n_components,), float64 in (0, 1]
    """
    a = _as2d(phi_cal, "phi_cal")
    f = np.asarray(folds)
    ids = np.unique(f)
    if ids.size < 2:
        raise ValueError("folds must name at least 2 folds")
    sq = np.zeros(a.shape[1])
    for i in ids:
        held = f == i
        c, s = center_scale(a[~held], robust=robust)
        sq += np.sum(((a[held] - c) / s) ** 2, axis=0)
    return 1.0 / np.maximum(1.0, sq / a.shape[0])


def residualize(
    phi_cal: np.ndarray, max_cal: np.ndarray, phi: np.ndarray, max_test: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Components minus their least-squares prediction ``a + b * max`` (fitted on calibration).

    Returns
    -------
    resid_cal, resid_test : ndarray (n_cal, n_components), (n, n_components), float64
    """
    a = _as2d(phi_cal, "phi_cal")
    x = np.asarray(max_cal, dtype=np.float64)
    xm = x.mean()
    vx = float(np.mean((x - xm) ** 2))
    b = np.zeros(a.shape[1]) if vx == 0.0 else ((x - xm) @ (a - a.mean(axis=0))) / (x.size * vx)
    icpt = a.mean(axis=0) - b * xm
    t = _as2d(phi, "phi")
    xt = np.asarray(max_test, dtype=np.float64)
    return a - (icpt + np.outer(x, b)), t - (icpt + np.outer(xt, b))


def conditional_residual(
    target_cal: np.ndarray, cov_cal: np.ndarray, target: np.ndarray, cov: np.ndarray
) -> np.ndarray:
    """Target minus its least-squares prediction from covariates, fitted on calibration maps.

    E.g. ``max(S)`` corrected for the map's roughness ``tv``: train-good maps with a rough
    texture have a higher max; what a defect adds is the max beyond the one the image's own
    roughness predicts. Fitted with an intercept on the calibration rows; the covariates are
    z-scored first (scale-free; a constant covariate gets a zero coefficient).

    Parameters
    ----------
    target_cal : ndarray (n_cal,)
    cov_cal : ndarray (n_cal, p) or (n_cal,)
    target : ndarray (n,)
    cov : ndarray (n, p) or (n,)

    Returns
    -------
    ndarray (n,), float64: ``target - (a + cov @ b)``
    """
    xc = _as2d(cov_cal, "cov_cal")
    xt = _as2d(cov, "cov")
    c, s = center_scale(xc)
    zc = np.column_stack([np.ones(xc.shape[0]), zscores(xc, c, s)])
    zt = np.column_stack([np.ones(xt.shape[0]), zscores(xt, c, s)])
    yc = np.asarray(target_cal, dtype=np.float64)
    coef, *_ = np.linalg.lstsq(zc, yc, rcond=None)
    return np.asarray(target, dtype=np.float64) - zt @ coef


def mahalanobis(x_cal: np.ndarray, x: np.ndarray, *, ridge: float = 1e-3) -> np.ndarray:
    """Full-covariance Mahalanobis distance of ``x`` to the calibration rows.

    The covariance of the standardised calibration rows gets ``ridge`` added to its
    diagonal (the rows are z-scored first, so the ridge is scale-free).

    Parameters
    ----------
    x_cal : ndarray (n_cal, f)
    x : ndarray (n, f)
    ridge : float >= 0

    Returns
    -------
    ndarray (n,), float64 >= 0
    """
    c, s = center_scale(x_cal)
    zc = zscores(x_cal, c, s)
    zt = zscores(x, c, s)
    cov = np.atleast_2d(np.cov(zc, rowvar=False, bias=True)) + ridge * np.eye(zc.shape[1])
    sol = np.linalg.solve(cov, zt.T).T
    return np.sqrt(np.maximum(np.sum(zt * sol, axis=1), 0.0))


def novelty_direction(
    x_seen: np.ndarray, x_unseen: np.ndarray, *, full: bool = True, ridge: float = 1e-3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label-free direction from maps of seen images to maps of unseen (held-out) images.

    The same train-good images are described twice: scored against a bank that contains
    them (``x_seen``, the paper's same-train calibration) and cross-fitted (``x_unseen``).
    The shift between the two is what "not in the bank" does to the descriptor, the
    direction an anomaly moves further along. With ``full=True`` it is Fisher's discriminant
    ``w = (Sigma + ridge I)^-1 (mean_unseen - mean_seen)`` (pooled covariance of the z-scored
    rows), else the diagonal version ``w_c = (mean_unseen - mean_seen)_c`` in z units.

    Parameters
    ----------
    x_seen, x_unseen : ndarray (n_seen, f), (n_unseen, f)
    full : bool
    ridge : float >= 0

    Returns
    -------
    centre, scale : ndarray (f,)
        Standardisation (of ``x_unseen``) applied before projecting.
    w : ndarray (f,)
        Unit-norm projection direction: score = ``((x - centre) / scale) @ w``.
    """
    c, s = center_scale(x_unseen)
    zs = zscores(x_seen, c, s)
    zu = zscores(x_unseen, c, s)
    diff = zu.mean(axis=0) - zs.mean(axis=0)
    if full:
        pooled = 0.5 * (
            np.atleast_2d(np.cov(zs, rowvar=False, bias=True))
            + np.atleast_2d(np.cov(zu, rowvar=False, bias=True))
        )
        w = np.linalg.solve(pooled + ridge * np.eye(diff.size), diff)
    else:
        w = diff
    norm = float(np.linalg.norm(w))
    return c, s, (w / norm if norm > 0 else w)


# --------------------------------------------------------------------------- variant context

PAPER = ("std", "top_mean", "tv")


class VariantContext:
    """Test and calibration maps of one data set, with descriptors computed once and cached.

    Parameters
    ----------
    test_maps : ndarray (n, H, W), float32
    test_max : ndarray (n,)
    cal_maps, cal_max : dicts mode -> arrays, modes ``"crossfit"`` and ``"train"``
    folds : ndarray (n_cal,), int
        Cross-fit fold of each calibration image.
    threads : int or None
        Threads of the C++ ``describe`` kernel.
    synthetic : structcore.research.synthetic_defects.SyntheticMaps or None
        Maps of synthetic defects on the train images (scored with the cross-fit fold
        banks), for the ``learned*`` variants; their fitted models land in ``models``.
    """

    def __init__(
        self,
        test_maps: np.ndarray,
        test_max: np.ndarray,
        cal_maps: dict[str, np.ndarray],
        cal_max: dict[str, np.ndarray],
        folds: np.ndarray,
        threads: int | None = None,
        synthetic: Any = None,
    ) -> None:
        self.synthetic = synthetic
        self.models: dict[str, Any] = {}
        self.test_maps = test_maps
        self.test_max = np.asarray(test_max, dtype=np.float64)
        self.cal_maps = cal_maps
        self.cal_max = {k: np.asarray(cal_max[k], dtype=np.float64) for k in cal_maps}
        self.folds = np.asarray(folds)
        self.threads = threads
        self._cache: dict[Any, Any] = {}

    def memo(self, key: Any, fn: Callable[[], Any]) -> Any:
        """``fn()`` computed once per ``key``."""
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def pixel_threshold(self, mode: str, q: float) -> float:
        """Quantile ``q`` of all calibration-map pixels of ``mode``."""
        return float(self.memo(("t", mode, q), lambda: np.quantile(self.cal_maps[mode], q)))

    def phi(self, which: str, mode: str, comps: Sequence[str], q: float = 0.999) -> np.ndarray:
        """Descriptors (C++ ``describe``) of test (``which="test"``) or calibration maps.

        Thresholded components use the ``q`` pixel quantile of the ``mode`` calibration maps.
        """
        from ..kernels import describe

        comps = tuple(comps)
        t = self.pixel_threshold(mode, q)
        if which == "syn":
            if self.synthetic is None:
                raise ValueError("this variant needs synthetic-defect maps (synthetic=...)")
            maps = self.synthetic.maps
        else:
            maps = self.test_maps if which == "test" else self.cal_maps[mode]

        def run() -> np.ndarray:
            return np.asarray(
                describe(maps, comps, threshold=t, threads=self.threads), dtype=np.float64
            )

        return self.memo(("phi", which, mode, comps, q), run)

    def both(self, mode: str, comps: Sequence[str], q: float = 0.999) -> tuple[np.ndarray, ...]:
        """(phi_cal, phi_test) of ``comps`` under calibration ``mode``."""
        return self.phi("cal", mode, comps, q), self.phi("test", mode, comps, q)

    def reference(self, mode: str = "crossfit") -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel reference (mean, scale) of the calibration maps (:func:`reference_maps`)."""
        return self.memo(("ref", mode), lambda: reference_maps(self.cal_maps[mode]))

    def relative_stat(self, which: str, kind: str, mode: str = "crossfit", k: int = 1) -> Any:
        """top-k mean (k=1: max) of relative maps of test or calibration maps.

        ``kind``: ``"mean"`` (S - mean map) or ``"z"`` ((S - mean) / scale map).
        """

        def run() -> np.ndarray:
            mean, scale = self.reference(mode)
            maps = self.test_maps if which == "test" else self.cal_maps[mode]
            out = np.empty(maps.shape[0])
            for s in range(0, maps.shape[0], 64):
                r = relative_maps(maps[s : s + 64], mean, scale if kind == "z" else None)
                out[s : s + 64] = topk_mean(r, k)
            return out

        return self.memo(("rel", which, kind, mode, k), run)


def _paper(ctx: VariantContext, mode: str, norm: str, lam: str | float, struct: bool) -> np.ndarray:
    """The paper's score exactly: StructCalibrator on (std, top_mean, tv)."""
    pc, pt = ctx.both(mode, PAPER)
    cal = StructCalibrator(norm, lam, names=PAPER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        cal.fit(pc, ctx.cal_max[mode])
    _, d, s = cal.transform(pt, ctx.test_max)
    return d if struct else s


def _generic(
    ctx: VariantContext,
    mode: str,
    comps: Sequence[str],
    *,
    joint: bool = False,
    one_sided: bool = False,
    robust: bool = False,
    norm: str = "l2",
    weights: str | None = None,
    lam_mode: str | None = None,
    resid: bool = False,
    q: float = 0.999,
) -> np.ndarray:
    """Descriptor z-scores combined into a score (see :data:`VARIANTS`).

    joint: z of [max, phi] and the score is D itself; else ``max + lambda * D`` with lambda
    scale-matched on the ``lam_mode`` calibration maps (default: ``mode``).
    """
    pc, pt = ctx.both(mode, comps, q)
    mc, mt = ctx.cal_max[mode], ctx.test_max
    if resid:
        pc, pt = residualize(pc, mc, pt, mt)
    if joint:
        pc = np.column_stack([mc, pc])
        pt = np.column_stack([mt, pt])
    c, s = center_scale(pc, robust=robust)
    w = None
    if weights == "stability":
        w = fold_stability_weights(pc, ctx.folds, robust=robust) if mode == "crossfit" else None
    dt = distance(zscores(pt, c, s), norm, one_sided=one_sided, weights=w)
    if joint:
        return dt
    lm = lam_mode or mode
    if lm == mode:
        dc = distance(zscores(pc, c, s), norm, one_sided=one_sided, weights=w)
        return hybrid(mt, dt, mc, dc, "auto")
    p2, _ = ctx.both(lm, comps, q)
    if resid:
        p2, _ = residualize(p2, ctx.cal_max[lm], pt[:1], mt[:1])
    dc = distance(zscores(p2, c, s), norm, one_sided=one_sided, weights=w)
    return hybrid(mt, dt, ctx.cal_max[lm], dc, "auto")


def _relative(ctx: VariantContext, kind: str, k: int, joint: bool = False) -> np.ndarray:
    """Max (or top-k mean) of the map relative to the per-pixel train-good reference."""
    rt = ctx.relative_stat("test", kind, "crossfit", k)
    if not joint:
        return rt
    rc = ctx.relative_stat("cal", kind, "crossfit", k)
    pc = np.column_stack([ctx.cal_max["crossfit"], rc])
    pt = np.column_stack([ctx.test_max, rt])
    c, s = center_scale(pc)
    return distance(zscores(pt, c, s), "l2", one_sided=True)


def _fullcov(ctx: VariantContext, mode: str, joint: bool) -> np.ndarray:
    """Full-covariance Mahalanobis of [max, phi] (joint) or max + lambda * that of phi."""
    pc, pt = ctx.both(mode, PAPER)
    mc, mt = ctx.cal_max[mode], ctx.test_max
    if joint:
        return mahalanobis(np.column_stack([mc, pc]), np.column_stack([mt, pt]))
    return hybrid(mt, mahalanobis(pc, pt), mc, mahalanobis(pc, pc), "auto")


def _novelty(ctx: VariantContext, comps: Sequence[str], joint: bool, full: bool) -> np.ndarray:
    """Projection on the seen -> unseen direction (:func:`novelty_direction`)."""
    ps, _ = ctx.both("train", comps)
    pu, pt = ctx.both("crossfit", comps)
    mu, mt = ctx.cal_max["crossfit"], ctx.test_max
    if joint:
        ps = np.column_stack([ctx.cal_max["train"], ps])
        pu = np.column_stack([mu, pu])
        pt = np.column_stack([mt, pt])
    c, s, w = novelty_direction(ps, pu, full=full)
    proj_t = zscores(pt, c, s) @ w
    if joint:
        return proj_t
    proj_u = zscores(pu, c, s) @ w
    return hybrid(mt, proj_t, mu, proj_u, "auto")


def _conditional(ctx: VariantContext, target: str, covs: Sequence[str], mode: str) -> np.ndarray:
    """``target`` (``"max"`` or a component) minus its prediction from ``covs``."""
    pc, pt = ctx.both(mode, tuple(covs))
    if target == "max":
        tc, tt = ctx.cal_max[mode], ctx.test_max
    else:
        qc, qt = ctx.both(mode, (target,))
        tc, tt = qc[:, 0], qt[:, 0]
    return conditional_residual(tc, pc, tt, pt)


def _max_plus_conditional(ctx: VariantContext, target: str, covs: Sequence[str]) -> np.ndarray:
    """``max + lambda * residual``, lambda scale-matched on the cross-fitted maps."""
    pc, pt = ctx.both("crossfit", tuple(covs))
    qc, qt = ctx.both("crossfit", (target,))
    rc = conditional_residual(qc[:, 0], pc, qc[:, 0], pc)
    rt = conditional_residual(qc[:, 0], pc, qt[:, 0], pt)
    return hybrid(ctx.test_max, rt, ctx.cal_max["crossfit"], rc, "auto")


def _mtcc(ctx: VariantContext, norm: str) -> np.ndarray:
    """Joint one-sided z of [max, largest-component mass at 3 pixel quantiles]."""
    qs = (0.99, 0.999, 0.9999)
    cols_c = [ctx.cal_max["crossfit"]]
    cols_t = [ctx.test_max]
    for q in qs:
        pc, pt = ctx.both("crossfit", ("cc_largest_mass",), q)
        cols_c.append(pc[:, 0])
        cols_t.append(pt[:, 0])
    c, s = center_scale(np.column_stack(cols_c))
    return distance(zscores(np.column_stack(cols_t), c, s), norm, one_sided=True)


def _topk(ctx: VariantContext, k: int) -> np.ndarray:
    return ctx.memo(("topk", k), lambda: topk_mean(ctx.test_maps, k))


#: Components of the extended novelty-direction variant.
NOVELTY_EXT = ("std", "top_mean", "tv", "q99", "mean", "cc_total_area")

#: Expected defect areas (pixels of the 224 x 224 crop) for top-k pooling: one 8 x 8 feature
#: cell / 4, one cell, 2 x 2 cells, and the paper's 1% (502 px).
TOPK_SIZES = (16, 64, 256, 502)


#: Every variant: name -> function of a :class:`VariantContext` returning test scores (n,).
def _learned(
    ctx: VariantContext, name: str, comps: Sequence[str], makers: Sequence[str]
) -> np.ndarray:
    """``max + a . z`` fitted on cross-fitted good vs synthetic-defect maps (issue 13).

    The product's fit (:func:`structcore.learned_calibration.fit_learned_score`, what
    ``Detector(calibration="synthetic")`` runs) on the harness's cached maps.
    """
    from ..learned_calibration import fit_learned_score

    syn = ctx.synthetic
    if syn is None:
        raise ValueError(f"{name} needs synthetic-defect maps")
    sel = np.isin(syn.maker, list(makers))
    pc = ctx.phi("cal", "crossfit", comps)
    ps = ctx.phi("syn", "crossfit", comps)
    pt = ctx.phi("test", "crossfit", comps)
    model = fit_learned_score(  # a fallback to max pooling shows in model.fallback
        ctx.cal_max["crossfit"],
        pc,
        syn.max[sel],
        ps[sel],
        components=comps,
        groups_good=np.arange(pc.shape[0]),
        groups_defect=syn.source[sel],
    )
    ctx.models[name] = model
    return model.score(ctx.test_max, pt)


#: Synthetic-defect makers of the default learned score (the painter is left out: it draws
#: the synthetic family's own test defects).
LEARNED_MAKERS = ("cutpaste", "perlin")
EXT = ("std", "top_mean", "tv", "q99", "cc_total_area", "cc_largest_mass")
#: Learned variants: name -> (components, makers). They need synthetic-defect maps.
LEARNED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "learned/cp+perlin": (PAPER, LEARNED_MAKERS),
    "learned/all": (PAPER, ("cutpaste", "perlin", "painter")),
    "learned/cutpaste": (PAPER, ("cutpaste",)),
    "learned/perlin": (PAPER, ("perlin",)),
    "learned/painter": (PAPER, ("painter",)),
    "learned_ext/cp+perlin": (EXT, LEARNED_MAKERS),
    # post hoc (added after the first issue-13 results, to test why learned/cp+perlin loses
    # on Magnetic Tile): the same fit without the roughness component tv. Never a candidate
    # of the declared leave-one-family-out selection (POST_HOC).
    "learned_notv/cp+perlin": (("std", "top_mean"), LEARNED_MAKERS),
}
#: Variants added after results were seen: reported, excluded from the declared selection.
POST_HOC = frozenset({"learned_notv/cp+perlin"})

VARIANTS: dict[str, Callable[[VariantContext], np.ndarray]] = {
    "max": lambda c: c.test_max,
}
for _mode in ("crossfit", "train"):
    VARIANTS[f"paper/l2/auto/{_mode}"] = lambda c, m=_mode: _paper(c, m, "l2", "auto", False)
    VARIANTS[f"paper/linf/auto/{_mode}"] = lambda c, m=_mode: _paper(c, m, "linf", "auto", False)
    VARIANTS[f"paper/l2/0.05/{_mode}"] = lambda c, m=_mode: _paper(c, m, "l2", 0.05, False)
    VARIANTS[f"struct/paper/l2/{_mode}"] = lambda c, m=_mode: _paper(c, m, "l2", "auto", True)
    VARIANTS[f"onesided/l2/auto/{_mode}"] = lambda c, m=_mode: _generic(c, m, PAPER, one_sided=True)
VARIANTS.update(
    {
        "onesided/linf/auto/crossfit": lambda c: _generic(
            c, "crossfit", PAPER, one_sided=True, norm="linf"
        ),
        "robust/l2/auto/crossfit": lambda c: _generic(c, "crossfit", PAPER, robust=True),
        "robust_onesided/l2/auto/crossfit": lambda c: _generic(
            c, "crossfit", PAPER, robust=True, one_sided=True
        ),
        "stability_onesided/l2/auto/crossfit": lambda c: _generic(
            c, "crossfit", PAPER, one_sided=True, weights="stability"
        ),
        "lamcf/l2/auto/train": lambda c: _generic(c, "train", PAPER, lam_mode="crossfit"),
        "lamcf_onesided/l2/auto/train": lambda c: _generic(
            c, "train", PAPER, one_sided=True, lam_mode="crossfit"
        ),
        "joint/l2/crossfit": lambda c: _generic(c, "crossfit", PAPER, joint=True),
        "joint_onesided/l2/crossfit": lambda c: _generic(
            c, "crossfit", PAPER, joint=True, one_sided=True
        ),
        "joint_onesided/linf/crossfit": lambda c: _generic(
            c, "crossfit", PAPER, joint=True, one_sided=True, norm="linf"
        ),
        "joint_robust_onesided/l2/crossfit": lambda c: _generic(
            c, "crossfit", PAPER, joint=True, one_sided=True, robust=True
        ),
        "resid_onesided/l2/auto/crossfit": lambda c: _generic(
            c, "crossfit", PAPER, one_sided=True, resid=True
        ),
        "joint_resid_onesided/l2/crossfit": lambda c: _generic(
            c, "crossfit", PAPER, joint=True, one_sided=True, resid=True
        ),
        "ext_onesided/l2/auto/crossfit": lambda c: _generic(
            c,
            "crossfit",
            ("std", "top_mean", "tv", "q99", "cc_total_area", "cc_largest_mass"),
            one_sided=True,
        ),
        "ref_mean/max": lambda c: _relative(c, "mean", 1),
        "ref_z/max": lambda c: _relative(c, "z", 1),
        "ref_z/top64": lambda c: _relative(c, "z", 64),
        "joint_ref_mean/max": lambda c: _relative(c, "mean", 1, joint=True),
        "joint_ref_z/max": lambda c: _relative(c, "z", 1, joint=True),
        "fullcov_joint/crossfit": lambda c: _fullcov(c, "crossfit", True),
        "fullcov/auto/crossfit": lambda c: _fullcov(c, "crossfit", False),
        "fullcov/auto/train": lambda c: _fullcov(c, "train", False),
        "novelty_lda/auto": lambda c: _novelty(c, PAPER, False, True),
        "novelty_diag/auto": lambda c: _novelty(c, PAPER, False, False),
        "novelty_lda_joint": lambda c: _novelty(c, PAPER, True, True),
        "novelty_diag_joint": lambda c: _novelty(c, PAPER, True, False),
        "novelty_lda_ext/auto": lambda c: _novelty(c, NOVELTY_EXT, False, True),
        "cond_max|tv/crossfit": lambda c: _conditional(c, "max", ("tv",), "crossfit"),
        "cond_max|tv,mean/crossfit": lambda c: _conditional(c, "max", ("tv", "mean"), "crossfit"),
        "cond_top|tv/crossfit": lambda c: _conditional(c, "top_mean", ("tv",), "crossfit"),
        "max+cond_top|tv/crossfit": lambda c: _max_plus_conditional(c, "top_mean", ("tv",)),
        "cond_max|tv/train": lambda c: _conditional(c, "max", ("tv",), "train"),
        "mtcc/l2": lambda c: _mtcc(c, "l2"),
        "mtcc/linf": lambda c: _mtcc(c, "linf"),
    }
)
for _k in TOPK_SIZES:
    VARIANTS[f"topk/{_k}"] = lambda c, k=_k: _topk(c, k)
for _n, (_c, _m) in LEARNED.items():
    VARIANTS[_n] = lambda c, n=_n, cc=_c, mm=_m: _learned(c, n, cc, mm)


def score_variants(
    ms: Any,
    names: Sequence[str] | None = None,
    threads: int | None = 2,
    *,
    synthetic: Any = None,
    models: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Scores of the named variants (default: all of :data:`VARIANTS`) on a MapSet.

    Parameters
    ----------
    ms : structcore.research.ablation.MapSet
    names : sequence of str or None
        None: every variant (the ``learned*`` ones only when ``synthetic`` is given).
    threads : int or None
    synthetic : SyntheticMaps or None
        Synthetic-defect maps of the train images (for the ``learned*`` variants).
    models : dict or None
        Receives the fitted :class:`~structcore.research.learned_score.LearnedScore` per
        learned variant.

    Returns
    -------
    dict of str to ndarray (n_test,), float64 (always includes ``"max"``)
    """
    ctx = VariantContext(
        ms.test_maps, ms.test_max, ms.cal_maps, ms.cal_max, ms.folds, threads, synthetic
    )
    keys = list(VARIANTS) if names is None else ["max", *[n for n in names if n != "max"]]
    if names is None and synthetic is None:
        keys = [k for k in keys if k not in LEARNED]
    unknown = [k for k in keys if k not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    out = {k: np.asarray(VARIANTS[k](ctx), dtype=np.float64) for k in keys}
    if models is not None:
        models.update(ctx.models)
    return out


#: Components whose z-distributions :func:`component_diagnostics` reports.
DIAGNOSTIC_COMPONENTS = ("std", "top_mean", "tv", "q99", "cc_total_area", "cc_largest_mass")


def component_diagnostics(
    ms: Any, rows: np.ndarray | None = None, mode: str = "crossfit", threads: int | None = 2
) -> dict[str, dict[str, float]]:
    """Per component: z on good and defective test images, and its AUROC alone.

    z uses the ``mode`` calibration (mean/std). ``max`` and the reference-relative max
    (``ref_z_max``) are included.

    Parameters
    ----------
    ms : structcore.research.ablation.MapSet
    rows : ndarray of int or None
        Test rows to use (default all).
    mode : {"crossfit", "train"}
    threads : int or None

    Returns
    -------
    dict component -> {"z_good_mean", "z_good_std", "z_defect_mean", "z_defect_std",
    "z_defect_median", "auroc"}
    """
    from .ablation import auroc

    ctx = VariantContext(ms.test_maps, ms.test_max, ms.cal_maps, ms.cal_max, ms.folds, threads)
    pc, pt = ctx.both(mode, DIAGNOSTIC_COMPONENTS)
    names = ["max", *DIAGNOSTIC_COMPONENTS, "ref_z_max"]
    rc = ctx.relative_stat("cal", "z", "crossfit", 1)
    rt = ctx.relative_stat("test", "z", "crossfit", 1)
    pc = np.column_stack([ctx.cal_max[mode], pc, rc])
    pt = np.column_stack([ctx.test_max, pt, rt])
    z = zscores(pt, *center_scale(pc))
    sel = np.arange(z.shape[0]) if rows is None else np.asarray(rows)
    y = np.asarray(ms.labels)[sel].astype(bool)
    z = z[sel]
    out: dict[str, dict[str, float]] = {}
    for j, n in enumerate(names):
        zg, zd = z[~y, j], z[y, j]
        out[n] = {
            "z_good_mean": float(zg.mean()),
            "z_good_std": float(zg.std()),
            "z_defect_mean": float(zd.mean()),
            "z_defect_std": float(zd.std()),
            "z_defect_median": float(np.median(zd)),
            "auroc": auroc(y, z[:, j]),
        }
    return out
