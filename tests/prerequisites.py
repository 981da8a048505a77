"""A test's missing prerequisite (a binary not built, a tool not installed): skipped on a plain
`pytest`, a failure under KUBEFENCE_E2E=1, where everything the tiers need must be there."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(message: str) -> NoReturn:
    if os.environ.get("KUBEFENCE_E2E") == "1":
        pytest.fail(message)
    pytest.skip(message)
