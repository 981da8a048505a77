"""The chart tests' one precondition: the pinned helm (helmchart.py stays a plain module, no
pytest, for the e2e and image tests that share it)."""

from __future__ import annotations

import pytest
from helmchart import tool
from prerequisites import unavailable


@pytest.fixture(scope="module")
def helm_required() -> None:
    """Skip without helm; under KUBEFENCE_E2E=1, where it must be there, fail instead."""
    if tool("helm") is None:
        unavailable("helm not found: run hack/build-control-plane.sh helm")
