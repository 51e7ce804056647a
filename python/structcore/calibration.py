"""StructCore calibration: diagonal Mahalanobis distance of map descriptors (METHOD.md §3.2-3.4).

:class:`StructCalibrator` is fitted on arrays only (descriptors ``phi`` and max scores of
train-good calibration maps), so it can be reused outside the detector:

* ``mu_`` and ``sigma_``: per-component mean and population standard deviation (``ddof=0``)
  of ``phi``; ``sigma_`` is floored at ``eps * max(1, |mu_|)`` so that a component without
  variance cannot divide by zero. Floored components are named in a
  :class:`CalibrationWarning`: their z-scores stay finite but can be very large on new images
  (dropping them from the descriptor is usually the better fix);
* ``z = (phi - mu_) / sigma_``; ``D = ||z||_2`` (``norm="l2"``, the paper's) or
  ``||z||_inf`` (``norm="linf"``);
* ``lambda_``: ``lam`` if a number (the author's configs use 0.05), else (``"auto"``) scale
  matching ``std(max) / std(D)`` over the calibration set (population std). If ``std(D)`` is
  0 (e.g. one calibration image) ``lambda_ = 0`` with a :class:`CalibrationWarning`;
* ``score = max + lambda_ * D`` (``S_hyb``);
* ``decision_threshold_``: the ``threshold_quantile`` quantile (NumPy's default linear
  interpolation) of the calibration scores; an image is anomalous when its score is strictly
  greater.

:meth:`StructCalibrator.fit_synthetic` (``Detector(calibration="synthetic")``) fits the same
``mu_``, ``sigma_`` on the good maps and replaces ``lambda_ * D`` by a *learned* linear term:
``score = max + sum_j weights_[j] * z_j``, the weights fitted on good vs synthetic-defect
descriptors (:mod:`structcore.learned_calibration`); ``lam`` is not used (``lambda_ = 0``) and
D is still reported.

References
----------
Chae et al., "StructCore", arXiv 2602.17048 (2026).
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence

import numpy as np

from ._validation import check_choice, check_positive_float, check_quantile
from .learned_calibration import fit_learned_score, linear_score

__all__ = [
    "CALIBRATION_MODES",
    "MAP_MODES",
    "CalibrationWarning",
    "StructCalibrator",
    "check_lam",
    "map_mode",
]

#: Values of the detector's ``calibration``: ``"crossfit"`` and ``"train"`` name the train-good
#: maps that calibrate the hybrid score (:data:`MAP_MODES`); ``"synthetic"`` fits a learned
#: linear score on the cross-fitted maps versus synthetic defects
#: (:meth:`StructCalibrator.fit_synthetic`).
CALIBRATION_MODES = ("crossfit", "train", "synthetic")
#: Which train-good maps a detector computes and stores (METHOD.md §3.5): ``"crossfit"`` (each
#: image scored by a bank of the other folds, :mod:`structcore.crossfit`) or ``"train"`` (by
#: the final bank). The keys of ``train_phi_`` / ``train_max_`` and of a model file's arrays.
MAP_MODES = ("crossfit", "train")


def map_mode(calibration: str) -> str:
    """The train maps a calibration mode is fitted on: ``"crossfit"`` for ``"synthetic"``
    (its good class), else the mode itself."""
    return "crossfit" if calibration == "synthetic" else calibration


class CalibrationWarning(UserWarning):
    """A calibration statistic is degenerate (zero variance); the fit continued with a floor."""


def check_lam(lam: object) -> None:
    """Check a weight of D: ``"auto"`` or a finite real number >= 0 (not bool).

    Raises
    ------
    TypeError
        ``lam`` is neither a string nor a real number (bool included).
    ValueError
        Another string, a negative or non-finite number.
    """
    if isinstance(lam, str):
        check_choice(lam, "lam", ("auto",))
    elif isinstance(lam, bool) or not isinstance(lam, numbers.Real):
        raise TypeError(f"lam must be 'auto' or a real number >= 0; got {lam!r}")
    else:
        check_positive_float(lam, "lam", allow_zero=True)


def _as_phi(phi: object, name: str, n_features: int | None = None) -> np.ndarray:
    arr = np.asarray(phi)
    if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
        raise TypeError(f"{name} must be a real-valued array; got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional (n_images, n_components); got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must not be empty; got shape {arr.shape}")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(
            f"{name} must have {n_features} components (as fitted); got shape {arr.shape}"
        )
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite; found NaN or Inf")
    return arr


def _as_scores(x: object, name: str, n: int) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
        raise TypeError(f"{name} must be a real-valued array; got dtype {arr.dtype}")
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match phi; got {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite; found NaN or Inf")
    return arr


class StructCalibrator:
    """Calibrate StructCore's structural distance and hybrid score on train-good maps.

    Parameters
    ----------
    norm : {"l2", "linf"}
        Norm of the z-vector giving the structural distance D.
    lam : "auto" or float >= 0
        Weight of D in the final score; ``"auto"`` = scale matching (module docstring).
    threshold_quantile : float in (0, 1]
        Quantile of the calibration scores used as the decision threshold.
    eps : float > 0
        Relative floor of ``sigma_`` (``eps * max(1, |mu|)``).
    names : sequence of str or None
        Component names, used in warnings (default ``"phi[i]"``).

    Attributes
    ----------
    mu_, sigma_ : ndarray of shape (n_components,), float64
    floored_ : tuple of str
        Names of the components whose sigma was floored.
    lambda_ : float
        0 after :meth:`fit_synthetic`.
    weights_ : ndarray of shape (n_components,), float64, or None
        The learned weights ``a`` of :meth:`fit_synthetic` (score ``max + a . z``); None for
        the hybrid score ``max + lambda_ * D``.
    learned_ : structcore.learned_calibration.LearnedScore
        After :meth:`fit_synthetic` only: the fitted logistic model (alpha, CV AUROCs, ...).
    decision_threshold_ : float
    n_calibration_ : int

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> cal = StructCalibrator().fit(rng.normal(size=(50, 3)), rng.normal(size=50))
    >>> z, d, s = cal.transform(np.zeros((2, 3)), np.zeros(2))
    >>> z.shape, d.shape, s.shape
    ((2, 3), (2,), (2,))
    """

    def __init__(
        self,
        norm: str = "l2",
        lam: str | float = "auto",
        threshold_quantile: float = 0.99,
        eps: float = 1e-6,
        names: Sequence[str] | None = None,
    ) -> None:
        self.norm = norm
        self.lam = lam
        self.threshold_quantile = threshold_quantile
        self.eps = eps
        self.names = names

    # ----------------------------------------------------------------------------------------
    def _check_params(self, n_features: int) -> list[str]:
        check_choice(self.norm, "norm", ("l2", "linf"))
        check_lam(self.lam)
        check_quantile(self.threshold_quantile, "threshold_quantile")
        check_positive_float(self.eps, "eps")
        if self.names is None:
            return [f"phi[{i}]" for i in range(n_features)]
        names = [str(n) for n in self.names]
        if len(names) != n_features:
            raise ValueError(f"names has {len(names)} entries but phi has {n_features} components")
        return names

    def fit(self, phi: object, max_scores: object) -> StructCalibrator:
        """Fit mu, sigma, lambda and the decision threshold.

        Parameters
        ----------
        phi : array_like of shape (n_images, n_components)
            Descriptors of the calibration (train-good) maps.
        max_scores : array_like of shape (n_images,)
            Their max-pooled image scores (possibly reweighted).

        Returns
        -------
        self : StructCalibrator
        """
        phi_arr = _as_phi(phi, "phi")
        n, f = phi_arr.shape
        names = self._check_params(f)
        mx = _as_scores(max_scores, "max_scores", n)

        self._fit_standardisation(phi_arr, names)
        d = self.distance(phi_arr)
        if isinstance(self.lam, str):
            sd = float(d.std())
            if sd > 0.0:
                self.lambda_ = float(mx.std()) / sd
            else:
                warnings.warn(
                    f"the structural distance D has zero spread over the {n} calibration maps; "
                    "lambda='auto' cannot scale-match and is set to 0 (score = max).",
                    CalibrationWarning,
                    stacklevel=2,
                )
                self.lambda_ = 0.0
        else:
            self.lambda_ = float(self.lam)
        self.weights_: np.ndarray | None = None
        self.calibration_scores_ = mx + self.lambda_ * d
        self.decision_threshold_ = float(
            np.quantile(self.calibration_scores_, float(self.threshold_quantile))
        )
        return self

    def _fit_standardisation(self, phi_arr: np.ndarray, names: list[str]) -> None:
        """mu_, sigma_ (floored, with the warning), n_calibration_, names_ of good ``phi``."""
        n = phi_arr.shape[0]
        mu = phi_arr.mean(axis=0)
        sigma = phi_arr.std(axis=0)
        floor = float(self.eps) * np.maximum(1.0, np.abs(mu))
        low = sigma < floor
        self.floored_ = tuple(names[i] for i in np.flatnonzero(low))
        if self.floored_:
            warnings.warn(
                f"descriptor component(s) {list(self.floored_)} have (near) zero variance on "
                f"the {n} calibration maps; their sigma is floored at eps * max(1, |mu|) "
                f"(eps={self.eps:g}). Their z-scores can be very large on new images; consider "
                "removing them from the descriptor.",
                CalibrationWarning,
                stacklevel=3,
            )
        self.mu_ = mu
        self.sigma_ = np.where(low, floor, sigma)
        self.n_calibration_ = n
        self.names_ = tuple(names)

    def fit_synthetic(
        self,
        phi: object,
        max_scores: object,
        defect_phi: object,
        defect_max: object,
        *,
        defect_sources: object = None,
        seed: int = 0,
    ) -> StructCalibrator:
        """Fit mu, sigma, the learned weights and the decision threshold (no lambda).

        ``mu_``, ``sigma_`` as :meth:`fit` on the good descriptors; ``weights_`` by
        :func:`structcore.learned_calibration.fit_learned_score` on good (class 0) vs defect
        (class 1) rows, grouped by source image; ``lambda_ = 0`` (``lam`` and ``norm`` only
        shape the reported D); ``decision_threshold_`` = the ``threshold_quantile`` quantile
        of the good rows' learned scores.

        Parameters
        ----------
        phi : array_like of shape (n_images, n_components)
            Descriptors of the good (cross-fitted) calibration maps, one row per train image.
        max_scores : array_like of shape (n_images,)
            Their max scores.
        defect_phi : array_like of shape (n_defects, n_components)
            Descriptors of the synthetic-defect maps.
        defect_max : array_like of shape (n_defects,)
            Their max scores.
        defect_sources : array_like of int of shape (n_defects,) or None
            Row of ``phi`` (train image) each defect was made on, in ``[0, n_images)``; the
            cross-validation of the regularisation holds an image and its defects out
            together. None: each defect its own group.
        seed : int >= 0
            Seed of the cross-validation's group split.

        Returns
        -------
        self : StructCalibrator

        Raises
        ------
        TypeError, ValueError
            Bad arrays (naming the argument), or parameters as :meth:`fit`.

        Warns
        -----
        CalibrationWarning
            Zero-variance components (as :meth:`fit`); a fit whose max coefficient is not
            positive (the score falls back to max pooling, ``weights_ = 0``).
        """
        phi_arr = _as_phi(phi, "phi")
        n, f = phi_arr.shape
        names = self._check_params(f)
        mx = _as_scores(max_scores, "max_scores", n)
        dphi = _as_phi(defect_phi, "defect_phi", n_features=f)
        dmax = _as_scores(defect_max, "defect_max", dphi.shape[0])
        src = None
        if defect_sources is not None:
            src = np.asarray(defect_sources)
            if src.dtype.kind not in "iu" or src.shape != (dphi.shape[0],):
                raise ValueError(
                    f"defect_sources must be integers of shape ({dphi.shape[0]},); got "
                    f"dtype {src.dtype} shape {src.shape}"
                )
            if src.size and (src.min() < 0 or src.max() >= n):
                raise ValueError(f"defect_sources must lie in [0, {n}) (rows of phi)")
        self._fit_standardisation(phi_arr, names)
        model = fit_learned_score(
            mx,
            phi_arr,
            dmax,
            dphi,
            components=names,
            groups_good=np.arange(n),
            groups_defect=src,
            seed=seed,
        )
        if model.fallback:
            warnings.warn(
                "learned score: the max coefficient is not positive (the synthetic defects do "
                "not raise max(S) once the other components are accounted for); falling back "
                "to max pooling (weights 0)",
                CalibrationWarning,
                stacklevel=2,
            )
        self.learned_ = model
        self.weights_ = model.a.copy()
        self.lambda_ = 0.0
        self.calibration_scores_ = linear_score(mx, self.zscores(phi_arr), self.weights_)
        self.decision_threshold_ = float(
            np.quantile(self.calibration_scores_, float(self.threshold_quantile))
        )
        return self

    def _restore(
        self,
        mu: np.ndarray,
        sigma: np.ndarray,
        lambda_: float,
        decision_threshold: float,
        weights: np.ndarray | None = None,
    ) -> StructCalibrator:
        """Set the fitted state from stored values (used by :mod:`structcore.io`)."""
        names = self._check_params(int(np.asarray(mu).shape[0]))
        self.mu_ = np.asarray(mu, dtype=np.float64).copy()
        self.sigma_ = np.asarray(sigma, dtype=np.float64).copy()
        self.names_ = tuple(names)
        self.floored_ = ()
        self.lambda_ = float(lambda_)
        self.weights_ = None if weights is None else np.asarray(weights, np.float64).copy()
        self.decision_threshold_ = float(decision_threshold)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "mu_"):
            raise RuntimeError("this StructCalibrator is not fitted yet; call fit(phi, max) first")

    def zscores(self, phi: object) -> np.ndarray:
        """Per-component z-scores ``(phi - mu_) / sigma_``, float64 of shape (n, n_components)."""
        self._check_fitted()
        arr = _as_phi(phi, "phi", n_features=self.mu_.shape[0])
        return (arr - self.mu_) / self.sigma_

    def distance(self, phi: object) -> np.ndarray:
        """Structural distance D (``norm`` of the z-vector), float64 of shape (n,)."""
        z = self.zscores(phi)
        if self.norm == "l2":
            return np.sqrt(np.sum(z * z, axis=1))
        return np.max(np.abs(z), axis=1)

    def transform(
        self, phi: object, max_scores: object
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Z-scores, structural distance and final score of new images.

        Parameters
        ----------
        phi : array_like of shape (n_images, n_components)
        max_scores : array_like of shape (n_images,)

        Returns
        -------
        z : ndarray of shape (n_images, n_components), float64
        distance : ndarray of shape (n_images,), float64
            D.
        score : ndarray of shape (n_images,), float64
            ``max_scores + lambda_ * D``, or ``max_scores + sum_j weights_[j] * z_j`` after
            :meth:`fit_synthetic` (:func:`structcore.learned_calibration.linear_score`).
        """
        z = self.zscores(phi)
        mx = _as_scores(max_scores, "max_scores", z.shape[0])
        d = np.sqrt(np.sum(z * z, axis=1)) if self.norm == "l2" else np.max(np.abs(z), axis=1)
        weights = getattr(self, "weights_", None)
        if weights is not None:
            return z, d, linear_score(mx, z, weights)
        return z, d, mx + self.lambda_ * d

    def score(self, phi: object, max_scores: object) -> np.ndarray:
        """Final score (``max + lambda_ * D`` or the learned one), float64 of shape (n_images,)."""
        return self.transform(phi, max_scores)[2]

    def decide(self, scores: object) -> np.ndarray:
        """``scores > decision_threshold_`` as a bool array."""
        self._check_fitted()
        return np.asarray(scores, dtype=np.float64) > self.decision_threshold_
