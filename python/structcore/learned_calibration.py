"""A linear image score fitted on good vs synthetic-defect maps (``calibration="synthetic"``).

StructCore (METHOD.md §3) fixes by hand which components of phi(S) count, in which direction
and how much against max(S): ``max + lambda * ||z||``. Here that choice is *fitted*, without
any real defect label, on

* cross-fitted maps of the train-good images (class 0), and
* maps of synthetic defects made on the same train images (:mod:`structcore.defects`), each
  scored with the cross-fit bank that holds none of its source image's patches (class 1).

Model: L2-regularised logistic regression on standardised features ``z = (x - mu) / sigma``,
``x = [max, phi_1, ..., phi_p]``, mu/sigma of the good (class 0) rows (population std, floored
at ``1e-6 * max(1, |mu|)`` as :class:`structcore.calibration.StructCalibrator` floors them);
the classes are weighted equally; the max coefficient ``b_0`` is (almost) unpenalised (ridge
``MAX_RIDGE * alpha``) and must come out positive, otherwise the score falls back to max
pooling (``a = 0``, ``LearnedScore.fallback``; :meth:`structcore.calibration.StructCalibrator
.fit_synthetic` warns then). The
regularisation ``alpha`` is chosen from :data:`ALPHAS` by grouped k-fold cross-validation
(groups = source image: an image and its defects are held out together), by the pooled
held-out AUROC; ties go to the strongest regularisation (closest to max pooling).

The score is *monotone increasing in max* and linear in the standardised components::

    s = max + sum_j a_j * (phi_j - mu_j) / sigma_j,     a_j = sigma_max * b_j / b_0

i.e. the logistic log-odds divided by ``b_0 / sigma_max``, minus a constant: the same ranking
as the fitted classifier, in the units of max(S). A model file stores ``mu_phi``,
``sigma_phi`` (the calibrator's ``mu``, ``sigma``) and ``a`` (its ``weights``);
:func:`linear_score` is the one place the sum is computed (in index order, as the C++
``Scorer`` computes it).

This is the research variant ``learned/cp+perlin`` of docs/ABLATION.md, moved into the
product (:mod:`structcore.research.learned_score` re-exports it).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._validation import check_int

__all__ = [
    "ALPHAS",
    "CV_FOLDS",
    "MAX_RIDGE",
    "LearnedScore",
    "fit_learned_score",
    "fit_logistic",
    "linear_score",
]

#: Regularisation grid of the cross-validation (declared in docs/ABLATION.md before results).
ALPHAS: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
#: Relative ridge on the max coefficient (keeps the problem strictly convex).
MAX_RIDGE = 1e-3
#: Folds of the grouped cross-validation of ``alpha`` (fewer when there are fewer groups).
CV_FOLDS = 5
#: Relative floor of the standardisation's sigma (as StructCalibrator's ``eps``).
_EPS = 1e-6


def linear_score(score_max: np.ndarray, z: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``score_max + sum_j weights[j] * z[:, j]``, the sum taken in index order.

    Parameters
    ----------
    score_max : ndarray of shape (n,), float64
        max(S) per image.
    z : ndarray of shape (n, p), float64
        Standardised descriptor components.
    weights : ndarray of shape (p,), float64
        ``a``, in units of max(S) per unit of z.

    Returns
    -------
    score : ndarray of shape (n,), float64
        ``lin = 0; lin += a_j * z_j`` for j = 0..p-1, then ``score_max + lin``: the order the
        C++ ``stages::StructCalibrator`` adds them in, so both agree bit for bit.
    """
    lin = np.zeros(z.shape[0], dtype=np.float64)
    for j in range(z.shape[1]):
        lin += weights[j] * z[:, j]
    return np.asarray(score_max, dtype=np.float64) + lin


def fit_logistic(
    z: np.ndarray,
    y: np.ndarray,
    alpha: float,
    penalty: np.ndarray,
    sample_weight: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Weighted L2 logistic regression by L-BFGS (deterministic).

    Minimises ``sum_i w_i log(1 + exp(-t_i (b0 + z_i . b))) / sum_i w_i
    + alpha / 2 * sum_j penalty_j b_j^2`` with ``t_i = 2 y_i - 1``.

    Parameters
    ----------
    z : ndarray of shape (n, p), float
        Features (standardised by the caller).
    y : ndarray of shape (n,), 0/1
        Class labels.
    alpha : float >= 0
        Regularisation strength.
    penalty : ndarray of shape (p,), >= 0
        Per-coefficient penalty factors (the intercept is never penalised).
    sample_weight : ndarray of shape (n,) or None
        Row weights (None: equal).

    Returns
    -------
    coef : ndarray of shape (p,), float64
    intercept : float
    """
    z = np.asarray(z, dtype=np.float64)
    t = 2.0 * np.asarray(y, dtype=np.float64) - 1.0
    w = np.ones(z.shape[0]) if sample_weight is None else np.asarray(sample_weight, float)
    w = w / w.sum()
    pen = alpha * np.asarray(penalty, dtype=np.float64)

    def f(theta: np.ndarray) -> tuple[float, np.ndarray]:
        b0, b = theta[0], theta[1:]
        m = t * (b0 + z @ b)
        loss = np.logaddexp(0.0, -m)
        g = -t * w * np.exp(-np.logaddexp(0.0, m))  # d loss / d margin-input
        val = float(w @ loss + 0.5 * pen @ (b * b))
        grad = np.concatenate([[g.sum()], z.T @ g + pen * b])
        return val, grad

    from scipy.optimize import minimize  # lazily: `import structcore` stays scipy-free

    res = minimize(
        f,
        np.zeros(z.shape[1] + 1),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 2000, "gtol": 1e-10, "ftol": 1e-15},
    )
    return res.x[1:].copy(), float(res.x[0])


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney AUROC (average ranks for ties) of scores ``s`` for 0/1 labels ``y``."""
    pos = np.asarray(y).astype(bool)
    n1, n0 = int(pos.sum()), int((~pos).sum())
    from scipy.stats import rankdata

    r = rankdata(np.asarray(s, dtype=np.float64))
    return float((r[pos].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


@dataclass
class LearnedScore:
    """A fitted ``max + a . z`` score (see the module docstring).

    Attributes
    ----------
    components : tuple of str
        Names of the descriptor components phi (p of them).
    mu, sigma : ndarray of shape (1 + p,), float64
        Standardisation of ``[max, phi]`` (good maps); ``sigma`` floored.
    coef : ndarray of shape (1 + p,), float64
        Logistic coefficients on ``z`` (``coef[0]``: max).
    intercept : float
    alpha : float
        Chosen regularisation.
    a : ndarray of shape (p,), float64
        Weights of ``z_phi`` in the score, in units of max (0 after a fallback).
    fallback : bool
        True when ``coef[0] <= 0`` (the score is then max pooling).
    cv : dict of float to float
        alpha -> pooled held-out-group AUROC on good vs synthetic-defect rows (empty when no
        cross-validation ran).
    """

    components: tuple[str, ...]
    mu: np.ndarray
    sigma: np.ndarray
    coef: np.ndarray
    intercept: float
    alpha: float
    a: np.ndarray
    fallback: bool
    cv: dict[float, float] = field(default_factory=dict)

    def score(self, score_max: np.ndarray, phi: np.ndarray) -> np.ndarray:
        """``max + sum_j a_j (phi_j - mu_j) / sigma_j`` (:func:`linear_score`).

        Parameters
        ----------
        score_max : ndarray of shape (n,)
        phi : ndarray of shape (n, p)

        Returns
        -------
        ndarray of shape (n,), float64
        """
        phi = np.asarray(phi, dtype=np.float64).reshape(len(score_max), -1)
        z = (phi - self.mu[1:]) / self.sigma[1:]
        return linear_score(np.asarray(score_max, dtype=np.float64), z, self.a)

    def state(self) -> dict[str, Any]:
        """The fitted numbers as plain lists (what a report or a model file needs)."""
        return {
            "components": list(self.components),
            "mu_phi": self.mu[1:].tolist(),
            "sigma_phi": self.sigma[1:].tolist(),
            "a": self.a.tolist(),
            "alpha": self.alpha,
            "fallback": self.fallback,
            "coef": self.coef.tolist(),
        }


def _standardise(x_good: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = x_good.mean(axis=0)
    sd = x_good.std(axis=0)
    return mu, np.maximum(sd, _EPS * np.maximum(1.0, np.abs(mu)))


def _fit_one(
    x0: np.ndarray, x1: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    mu, sd = _standardise(x0)
    z = (np.vstack([x0, x1]) - mu) / sd
    y = np.r_[np.zeros(len(x0)), np.ones(len(x1))]
    w = np.where(y == 1, 0.5 / len(x1), 0.5 / len(x0))
    pen = np.ones(z.shape[1])
    pen[0] = MAX_RIDGE
    coef, b0 = fit_logistic(z, y, alpha, pen, w)
    return mu, sd, coef, b0


def _weights(coef: np.ndarray, sd: np.ndarray) -> tuple[np.ndarray, bool]:
    if not coef[0] > 0:
        return np.zeros(coef.size - 1), True
    return sd[0] * coef[1:] / coef[0], False


def _rows(x: object, name: str, n: int | None, ndim: int) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
        raise TypeError(f"{name} must be a real-valued array; got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional; got shape {arr.shape}")
    if arr.shape[0] == 0 or (n is not None and arr.shape[0] != n):
        want = "non-empty" if n is None else f"{n} rows"
        raise ValueError(f"{name} must have {want}; got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite; found NaN or Inf")
    return arr


def _groups(g: object, name: str, n: int, default: np.ndarray) -> np.ndarray:
    if g is None:
        return default
    arr = np.asarray(g)
    if arr.dtype.kind not in "iu" or arr.shape != (n,):
        raise ValueError(f"{name} must be an integer array of shape ({n},); got {arr.shape}")
    return arr.astype(np.int64)


def _alphas(alphas: object) -> list[float]:
    vals = list(alphas) if isinstance(alphas, Sequence) else []
    real = [isinstance(a, numbers.Real) and not isinstance(a, bool) for a in vals]
    out = [float(a) for a, ok in zip(vals, real, strict=True) if ok]
    if not vals or len(out) != len(vals) or not all(np.isfinite(a) and a >= 0 for a in out):
        raise ValueError(
            f"alphas must be a non-empty sequence of finite numbers >= 0; got {alphas!r}"
        )
    return out


def fit_learned_score(
    max_good: object,
    phi_good: object,
    max_defect: object,
    phi_defect: object,
    *,
    components: Sequence[str],
    groups_good: object = None,
    groups_defect: object = None,
    alphas: Sequence[float] = ALPHAS,
    folds: int = CV_FOLDS,
    seed: int = 0,
) -> LearnedScore:
    """Fit the score on good (class 0) vs synthetic-defect (class 1) maps.

    Parameters
    ----------
    max_good, phi_good : array_like of shape (n0,), (n0, p)
        max(S) and descriptors of the cross-fitted good maps.
    max_defect, phi_defect : array_like of shape (n1,), (n1, p)
        Those of the synthetic-defect maps.
    components : sequence of str
        Names of the p components.
    groups_good, groups_defect : array_like of int of shape (n0,), (n1,), or None
        Source image of each row (the grouped CV keeps an image and its defects together).
        None: each row its own group.
    alphas : sequence of float >= 0
        Regularisation grid; a single value skips the cross-validation.
    folds : int >= 2
        Grouped CV: the groups are permuted by ``numpy.random.default_rng(seed)`` and split
        into ``min(folds, n_groups)`` parts. When no part can be scored (fewer than 2 groups,
        or no part holding both classes) the largest alpha is taken.
    seed : int >= 0

    Returns
    -------
    LearnedScore

        ``fallback`` is True (and ``a = 0``: max pooling) when the max coefficient is not
        positive; this function does not warn (the detector's calibrator does).

    Raises
    ------
    TypeError, ValueError
        Non-numeric, mis-shaped, empty or non-finite inputs, a ``components`` list of
        another length than p, bad ``groups_*``, ``alphas``, ``folds`` or ``seed`` (the
        message names the argument).
    """
    mg = _rows(max_good, "max_good", None, 1)
    pg = _rows(phi_good, "phi_good", mg.shape[0], 2)
    md = _rows(max_defect, "max_defect", None, 1)
    pd = _rows(phi_defect, "phi_defect", md.shape[0], 2)
    comps = tuple(str(c) for c in components)
    if pd.shape[1] != pg.shape[1] or len(comps) != pg.shape[1]:
        raise ValueError(
            f"phi_good, phi_defect and components must agree on the number of components; "
            f"got {pg.shape[1]}, {pd.shape[1]} and {len(comps)}"
        )
    x0 = np.column_stack([mg, pg])
    x1 = np.column_stack([md, pd])
    g0 = _groups(groups_good, "groups_good", len(x0), np.arange(len(x0)))
    g1 = _groups(groups_defect, "groups_defect", len(x1), len(x0) + np.arange(len(x1)))
    grid = _alphas(alphas)
    folds = check_int(folds, "folds", low=2)
    seed = check_int(seed, "seed", low=0, high=2**63 - 1)
    cv: dict[float, float] = {}
    alpha = max(grid) if len(grid) > 1 else grid[0]
    uniq = np.unique(np.r_[g0, g1])
    if len(grid) > 1 and uniq.size >= 2:
        perm = np.random.default_rng(seed).permutation(uniq)
        parts = np.array_split(perm, min(folds, uniq.size))
        for a_try in grid:
            ys, ss = [], []
            for part in parts:
                h0, h1 = np.isin(g0, part), np.isin(g1, part)
                if not h0.any() or not h1.any() or h0.all() or h1.all():
                    continue
                mu, sd, coef, _ = _fit_one(x0[~h0], x1[~h1], a_try)
                a, _ = _weights(coef, sd)
                xv = np.vstack([x0[h0], x1[h1]])
                ss.append(linear_score(xv[:, 0], (xv[:, 1:] - mu[1:]) / sd[1:], a))
                ys.append(np.r_[np.zeros(h0.sum()), np.ones(h1.sum())])
            if ys:  # pooled held-out AUROC (each fold's score is in max units: pooling is fair)
                cv[a_try] = _auroc(np.concatenate(ys), np.concatenate(ss))
        if cv:
            best = max(cv.values())
            # ties (within 1e-9): the strongest regularisation, i.e. closest to max pooling
            alpha = max(a for a, v in cv.items() if v >= best - 1e-9)
    mu, sd, coef, b0 = _fit_one(x0, x1, alpha)
    a, fallback = _weights(coef, sd)
    return LearnedScore(comps, mu, sd, coef, b0, float(alpha), a, fallback, cv)
