"""What a detector (or the C++-backed :class:`structcore.Scorer`) returns for a batch of images."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Prediction"]


@dataclass(frozen=True)
class Prediction:
    """What :meth:`Detector.predict` returns, one row per image.

    Attributes
    ----------
    maps : ndarray of shape (B, crop, crop), float32
        Anomaly maps S (pixel-level localisation; aligned with the centre crop).
    score_max : ndarray of shape (B,), float64
        max(S), times PatchCore's reweighting factor when the detector has ``reweight=True``.
    score_struct : ndarray of shape (B,), float64
        The structural distance D alone ("struct-only").
    score : ndarray of shape (B,), float64
        The image score ``score_max + lambda_ * D``: max pooling with the default
        ``lam=0``, the StructCore hybrid with ``lam="auto"`` or a positive weight;
        ``score_max + sum_j weights_[j] * z_j`` with ``calibration="synthetic"``.
    descriptor : ndarray of shape (B, n_components), float64
        phi(S), in the order of :attr:`Detector.components_`.
    z : ndarray of shape (B, n_components), float64
        ``(phi - mu_) / sigma_``.
    is_anomalous : ndarray of shape (B,), bool
        ``score > decision_threshold_``.
    timings : dict of str to float
        Seconds spent per stage (``preprocess``, ``features``, ``knn``, ``map``,
        ``descriptor``, ``calibration``) over the whole call.
    valid : ndarray of shape (B,), bool
        True for the images that were scored. All True unless ``predict(...,
        errors="skip")`` met images it could not read; a failed image has NaN ``maps``,
        ``score_max``, ``score_struct``, ``score``, ``descriptor`` and ``z`` and
        ``is_anomalous`` False, so check ``valid`` (or :attr:`errors`) before trusting a
        decision.
    errors : dict of int to str
        Index in the batch -> ``"ExceptionType: message"`` of each image that failed (empty
        when every image was scored).
    """

    maps: np.ndarray
    score_max: np.ndarray
    score_struct: np.ndarray
    score: np.ndarray
    descriptor: np.ndarray
    z: np.ndarray
    is_anomalous: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    valid: np.ndarray = None  # type: ignore[assignment]  # filled in __post_init__
    errors: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.valid is None:
            object.__setattr__(self, "valid", np.ones(self.score.shape[0], dtype=bool))

    def __len__(self) -> int:
        return int(self.score.shape[0])

    @property
    def n_failed(self) -> int:
        """Number of images that could not be scored (``len(errors)``)."""
        return len(self.errors)
