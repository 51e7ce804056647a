"""Stage 4 of the detector: the structural descriptor phi(S) of anomaly maps (METHOD.md §3.1, §4).

:class:`Descriptor` holds the component names and the pixel threshold ``t`` of the
thresholded components (connected components and spatial moments of ``S > t``; ``t`` is a
high quantile of the calibration maps' pixels, :meth:`Descriptor.fit`), and computes
``phi(S)`` with :func:`structcore.kernels.describe` (C++) or its NumPy twin. The calibration
of phi (diagonal Mahalanobis, lambda, decision threshold) is the next stage,
:class:`structcore.calibration.StructCalibrator`.

:func:`resolve_components` turns the detector's ``descriptor`` parameter (``"paper"``,
``"extended"`` or a list of names) into component names.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._components import (
    DESCRIPTOR_COMPONENTS,
    EXTENDED_COMPONENTS,
    PAPER_COMPONENTS,
    parse_components,
)
from ._validation import check_quantile
from .memory_bank import backend_module

__all__ = [
    "EXTENDED_COMPONENTS",
    "PAPER_COMPONENTS",
    "Descriptor",
    "pixel_threshold",
    "resolve_components",
]


def resolve_components(descriptor: object) -> tuple[str, ...]:
    """Component names of a ``descriptor`` setting.

    Parameters
    ----------
    descriptor : "paper", "extended" or sequence of str
        ``"paper"``: :data:`PAPER_COMPONENTS` (std, top_mean, tv); ``"extended"``:
        :data:`EXTENDED_COMPONENTS`; or names of :data:`structcore.DESCRIPTOR_COMPONENTS`
        (quantiles ``"q95"``, ``"q:0.995"`` too), distinct, at least one.

    Returns
    -------
    components : tuple of str

    Raises
    ------
    TypeError
        Not a string or a sequence of strings.
    ValueError
        Another string, an empty list, an unknown or repeated name.
    """
    if isinstance(descriptor, str):
        if descriptor == "paper":
            return PAPER_COMPONENTS
        if descriptor == "extended":
            return EXTENDED_COMPONENTS
        raise ValueError(
            f"descriptor must be 'paper', 'extended' or a list of component names; "
            f"got {descriptor!r}"
        )
    try:
        names = tuple(descriptor)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(
            f"descriptor must be 'paper', 'extended' or a list of names; got {descriptor!r}"
        ) from None
    if not names:
        raise ValueError("descriptor must name at least one component; got an empty list")
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"descriptor: component names must be str; got {n!r}")
        try:
            parse_components((n,))
        except ValueError:
            raise ValueError(
                f"descriptor: unknown component {n!r}; choose from {sorted(DESCRIPTOR_COMPONENTS)} "
                "or a quantile 'q<percent>' / 'q:<fraction>'"
            ) from None
    if len(set(names)) != len(names):
        raise ValueError(f"descriptor must not repeat a component; got {list(names)}")
    return names


def pixel_threshold(maps: np.ndarray, quantile: float) -> float:
    """Threshold ``t`` of the thresholded components: a quantile of all map pixels.

    Parameters
    ----------
    maps : ndarray of shape (N, H, W), float32
        Calibration maps of train-good images.
    quantile : float in (0, 1]
        E.g. 0.999 (METHOD.md §4); NumPy's default (linear) interpolation.

    Returns
    -------
    t : float
    """
    return float(np.quantile(maps, check_quantile(quantile, "quantile")))


class Descriptor:
    """phi(S): named structural components of anomaly maps.

    Parameters
    ----------
    components : sequence of str
        Component names (:func:`resolve_components` checks a user's setting).
    threshold : float
        ``t`` of the thresholded components (:func:`pixel_threshold`; ignored by the others).
    backend : {"cpp", "reference"}
        Kernels: :mod:`structcore.kernels` (C++) or :mod:`structcore.reference` (NumPy).
    threads : int or None
        Thread cap of the kernel (None: all OpenMP threads).

    Notes
    -----
    ``top_mean`` uses ``top_ratio = 0.01`` and connected components 8-connectivity
    (:func:`structcore.kernels.describe`'s defaults, as the C++ ``Scorer``).

    Examples
    --------
    >>> import numpy as np
    >>> maps = np.zeros((1, 8, 8), dtype=np.float32); maps[0, 2:4, 2:4] = 1.0
    >>> Descriptor(("std", "top_mean", "tv"), threshold=0.5)(maps).round(3)
    array([[0.415, 1.   , 0.25 ]])
    """

    def __init__(
        self,
        components: Sequence[str],
        threshold: float,
        *,
        backend: str = "cpp",
        threads: int | None = None,
    ) -> None:
        self.components = tuple(components)
        self.threshold = float(threshold)
        self.backend = backend
        self.threads = threads
        self._kernels = backend_module(backend)

    @classmethod
    def fit(
        cls,
        maps: np.ndarray,
        components: Sequence[str],
        quantile: float,
        *,
        backend: str = "cpp",
        threads: int | None = None,
    ) -> Descriptor:
        """A descriptor whose threshold is the ``quantile`` of the pixels of ``maps``.

        Parameters
        ----------
        maps : ndarray of shape (N, H, W), float32
            Calibration maps of train-good images.
        components : sequence of str
        quantile : float in (0, 1]
        backend, threads
            As the constructor.

        Returns
        -------
        descriptor : Descriptor
        """
        t = pixel_threshold(maps, quantile)
        return cls(components, t, backend=backend, threads=threads)

    def __call__(self, maps: np.ndarray) -> np.ndarray:
        """phi of each map.

        Parameters
        ----------
        maps : ndarray of shape (B, H, W), float32
            Anomaly maps (validated by the caller).

        Returns
        -------
        phi : ndarray of shape (B, len(components)), float64
            Columns in :attr:`components` order.
        """
        phi = self._kernels.describe(
            maps, self.components, threshold=self.threshold, threads=self.threads
        )
        return np.asarray(phi, dtype=np.float64)
