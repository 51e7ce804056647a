"""Shared fixtures: paths to ../shared, hypothesis profiles, thread settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STRUCTCORE_SHARED", ROOT.parent / "shared"))

# The default profile runs a moderate number of examples, derandomized so that a run is
# reproducible (a landing must not depend on luck); STRUCTCORE_HYPOTHESIS=thorough explores
# with fresh random examples (1,000 per test) for local soak runs, "random" with 60.
settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "random", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("STRUCTCORE_HYPOTHESIS", "ci"))


def shared_path(*parts: str) -> Path:
    """Path under ../shared, or skip the calling test with the reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the project's ../shared data folder), which is absent here")
    return path


@pytest.fixture
def mvtec_bottle() -> Path:
    """Root of MVTec AD *bottle* (train/good, test/<defect>, ground_truth)."""
    return shared_path("datasets", "mvtec_ad", "bottle")


@pytest.fixture
def magnetic_tile() -> Path:
    """Root of the Magnetic Tile defect set (MT_<class>/Imgs)."""
    return shared_path("datasets", "magnetic_tile")


@pytest.fixture
def torch_home() -> Path:
    """A TORCH_HOME whose hub cache holds torchvision's MobileNetV2 ImageNet weights."""
    return shared_path("weights")
