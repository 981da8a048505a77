"""Shared test set-up: `tests/` on sys.path so suites share the object builders in `objects.py`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
