"""The learned ``[max, phi]`` score of issue 13: now the product's ``calibration="synthetic"``.

The fit lives in :mod:`structcore.learned_calibration` (L2 logistic regression of cross-fitted
good maps vs synthetic-defect maps, alpha by grouped cross-validation, score
``max + sum_j a_j z_j``); this module re-exports it for the research harness
(:mod:`structcore.research.variants`, ``bench/``) and older imports.
"""

from __future__ import annotations

from ..learned_calibration import (
    ALPHAS,
    MAX_RIDGE,
    LearnedScore,
    fit_learned_score,
    fit_logistic,
)

__all__ = ["ALPHAS", "MAX_RIDGE", "LearnedScore", "fit_learned_score", "fit_logistic"]
