"""Fixtures and paths shared by every test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Real etcd members for the store and election tests (`etcd`, `etcd_fresh`, `etcd_cluster`).
pytest_plugins = ("tests.etcd_server",)

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = REPO / "manifests"

# CI runs the property tests at full strength; a quick local run may lower it.
settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("EDGEFLEET_FUZZ_EXAMPLES", "2000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("ci")


@pytest.fixture
def repo() -> Path:
    """The repository root."""
    return REPO
