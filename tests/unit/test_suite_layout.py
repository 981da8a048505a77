"""The suite itself: pytest's prepend import mode needs every test module's basename unique
(a duplicate is a collection error on a fresh clone, where no cache hides it)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_module_basenames_are_unique() -> None:
    names = Counter(p.name for p in TESTS.rglob("*.py") if p.name != "conftest.py")
    assert [name for name, count in names.items() if count > 1] == []


def test_no_test_imports_the_tests_folder_as_a_package() -> None:
    """`from tests.x import ...` works under `python -m pytest` (the working directory is on
    sys.path) and not under plain `pytest`, which the README's test command runs: shared helpers
    live in modules directly under `tests/`, which its conftest puts on the path."""
    offenders = [
        str(p.relative_to(TESTS))
        for p in TESTS.rglob("*.py")
        if any(
            line.startswith(("from tests.", "import tests"))
            for line in p.read_text(encoding="utf-8").splitlines()
        )
    ]
    assert offenders == []
