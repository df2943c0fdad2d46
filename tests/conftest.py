"""Shared fixtures of the unit tests (no cluster needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from twinhull.policy import TierPolicy, load_file

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def policy() -> TierPolicy:
    return load_file()
