"""A linear image score fitted on good vs synthetic-defect maps (issue 13, label-free).

StructCore (METHOD.md §3) fixes by hand which components of phi(S) count, in which direction
and how much against max(S): ``max + lambda * ||z||``. Here that choice is *fitted*, without
any real defect label, on

* cross-fitted maps of the train-good images (class 0), and
* maps of synthetic defects made on the same train images
  (:mod:`structcore.research.synthetic_defects`), each scored with the fold bank that does not
  contain its source image (class 1).

Model: L2-regularised logistic regression on standardised features
``z = (x - mu) / sigma``, ``x = [max, phi_1, ..., phi_p]``, mu/sigma of the good (class 0)
rows; the classes are weighted equally; the max coefficient ``b_0`` is (almost) unpenalised
(ridge ``1e-3 * alpha``) and must come out positive, otherwise the score falls back to max
pooling. The regularisation ``alpha`` is chosen by grouped k-fold cross-validation on the
synthetic data (groups = source image), the AUROC of the score on the held-out groups.

The score is *monotone increasing in max* and linear in the standardised components::

    s = max + sum_j a_j * (phi_j - mu_j) / sigma_j,     a_j = sigma_max * b_j / b_0

i.e. the logistic log-odds divided by ``b_0 / sigma_max`` plus a constant: the same ranking as
the fitted classifier, in the units of max(S). A product implementation stores
``components``, ``mu_phi``, ``sigma_phi`` and ``a`` (:meth:`LearnedScore.state`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize

__all__ = ["ALPHAS", "LearnedScore", "fit_learned_score", "fit_logistic"]

#: Regularisation grid of the cross-validation (declared in docs/ABLATION.md before results).
ALPHAS: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
#: Relative ridge on the max coefficient (keeps the problem strictly convex).
MAX_RIDGE = 1e-3


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
    z : ndarray (n, p)
    y : ndarray (n,), 0/1
    alpha : float >= 0
    penalty : ndarray (p,), >= 0
        Per-coefficient penalty factors (the intercept is never penalised).
    sample_weight : ndarray (n,) or None

    Returns
    -------
    coef : ndarray (p,)
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

    res = minimize(
        f,
        np.zeros(z.shape[1] + 1),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 2000, "gtol": 1e-10, "ftol": 1e-15},
    )
    return res.x[1:].copy(), float(res.x[0])


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    from .ablation import auroc

    return auroc(y, s)


@dataclass
class LearnedScore:
    """A fitted ``max + a . z`` score (see the module docstring).

    Attributes
    ----------
    components : tuple of str
        Descriptor components phi (C++ ``describe`` names).
    mu, sigma : ndarray (1 + p,)
        Standardisation of ``[max, phi]`` (good cross-fitted maps); ``sigma`` floored.
    coef : ndarray (1 + p,)
        Logistic coefficients on ``z`` (``coef[0]``: max).
    intercept : float
    alpha : float
        Chosen regularisation.
    a : ndarray (p,)
        Weights of ``z_phi`` in the score, in units of max (0 after a fallback).
    fallback : bool
        True when ``coef[0] <= 0`` (the score is then max pooling).
    cv : dict
        alpha -> mean held-out-group AUROC on the synthetic data.
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
        """``max + sum_j a_j (phi_j - mu_j) / sigma_j``, float64 (n,)."""
        phi = np.asarray(phi, dtype=np.float64).reshape(len(score_max), -1)
        z = (phi - self.mu[1:]) / self.sigma[1:]
        return np.asarray(score_max, dtype=np.float64) + z @ self.a

    def state(self) -> dict[str, Any]:
        """What a model file stores: plain lists (the C++ Scorer computes the same score)."""
        return {
            "components": list(self.components),
            "mu_phi": self.mu[1:].tolist(),
            "sigma_phi": self.sigma[1:].tolist(),
            "a": self.a.tolist(),
            "alpha": self.alpha,
            "fallback": self.fallback,
            "coef": self.coef.tolist(),
        }


def _standardise(x_good: np.ndarray, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    mu = x_good.mean(axis=0)
    sd = x_good.std(axis=0)
    return mu, np.maximum(sd, eps * np.maximum(1.0, np.abs(mu)))


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


def fit_learned_score(
    max_good: np.ndarray,
    phi_good: np.ndarray,
    max_defect: np.ndarray,
    phi_defect: np.ndarray,
    *,
    components: Sequence[str],
    groups_good: np.ndarray | None = None,
    groups_defect: np.ndarray | None = None,
    alphas: Sequence[float] = ALPHAS,
    folds: int = 5,
    seed: int = 0,
) -> LearnedScore:
    """Fit the score on good (class 0) vs synthetic-defect (class 1) maps.

    Parameters
    ----------
    max_good, phi_good : ndarray (n0,), (n0, p)
        max(S) and descriptors of the cross-fitted good maps.
    max_defect, phi_defect : ndarray (n1,), (n1, p)
        Those of the synthetic-defect maps.
    components : sequence of str
        Names of the p components.
    groups_good, groups_defect : ndarray of int or None
        Source image of each row (grouped CV keeps an image and its defects together).
        None: each row its own group.
    alphas : sequence of float
        Regularisation grid; a single value skips the CV.
    folds, seed : int
        Grouped CV: groups permuted by ``default_rng(seed)`` and split into ``folds``.

    Returns
    -------
    LearnedScore
    """
    x0 = np.column_stack([np.asarray(max_good, float), np.asarray(phi_good, float)])
    x1 = np.column_stack([np.asarray(max_defect, float), np.asarray(phi_defect, float)])
    if not (np.isfinite(x0).all() and np.isfinite(x1).all()):
        raise ValueError("features must be finite")
    g0 = np.arange(len(x0)) if groups_good is None else np.asarray(groups_good)
    g1 = (len(x0) + np.arange(len(x1))) if groups_defect is None else np.asarray(groups_defect)
    cv: dict[float, float] = {}
    alphas = list(alphas)
    if len(alphas) > 1:
        uniq = np.unique(np.r_[g0, g1])
        perm = np.random.default_rng(seed).permutation(uniq)
        parts = np.array_split(perm, folds)
        for alpha in alphas:
            ys, ss = [], []
            for part in parts:
                h0, h1 = np.isin(g0, part), np.isin(g1, part)
                if not h0.any() or not h1.any():
                    continue
                mu, sd, coef, _ = _fit_one(x0[~h0], x1[~h1], alpha)
                a, _ = _weights(coef, sd)
                xv = np.vstack([x0[h0], x1[h1]])
                ss.append(xv[:, 0] + ((xv[:, 1:] - mu[1:]) / sd[1:]) @ a)
                ys.append(np.r_[np.zeros(h0.sum()), np.ones(h1.sum())])
            # pooled held-out AUROC (each fold's score is in max units, so pooling is fair)
            cv[float(alpha)] = _auroc(np.concatenate(ys), np.concatenate(ss))
        best = max(cv.values())
        # ties (within 1e-9): the strongest regularisation, i.e. closest to max pooling
        alpha = max(a for a, v in cv.items() if v >= best - 1e-9)
    else:
        alpha = float(alphas[0])
    mu, sd, coef, b0 = _fit_one(x0, x1, alpha)
    a, fallback = _weights(coef, sd)
    if fallback:
        warnings.warn(
            "learned score: the max coefficient is not positive; falling back to max pooling",
            RuntimeWarning,
            stacklevel=2,
        )
    return LearnedScore(tuple(components), mu, sd, coef, b0, float(alpha), a, fallback, cv)
