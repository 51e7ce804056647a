"""Research on image scores: the variant zoo, the variant grid and the ablation harness.

Nothing in the product imports this package (a test checks the import graph): a production
user of :class:`structcore.Detector`, the CLI's ``fit``/``predict`` or :class:`structcore.Scorer`
never loads it. It is opt-in, as scikit-learn keeps ``sklearn.experimental``.

* :mod:`structcore.research.grid`: :func:`~structcore.research.grid.variant_scores`, the
  standard grid of a fitted detector (descriptor x norm x lambda x calibration mode), what
  :meth:`structcore.Detector.variant_scores` and ``structcore eval`` report;
* :mod:`structcore.research.variants`: every score variant of the accuracy ablation (pure
  NumPy on descriptors and maps);
* :mod:`structcore.research.ablation`: cached maps, AUROC, paired bootstrap, leave-one-out
  selection (the reusable half of ``bench/accuracy.py``);
* :mod:`structcore.research.tiling`: tiled inference for elongated parts (overlapping square
  tiles along the long side, tile maps stitched into one map of the whole image).
"""

from __future__ import annotations

__all__ = ["ablation", "grid", "tiling", "variants"]
