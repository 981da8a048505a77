#!/usr/bin/env bash
# The test command of the README: set up (idempotent, seconds when done before), lint, type-check,
# then the whole pytest suite, end-to-end against the real local kube-apiserver included.
set -euo pipefail
cd "$(dirname "$0")/.."

hack/setup.sh
# .ci/run sets KUBEFENCE_E2E=1 (a missing control plane fails); locally it skips with a hint.

echo "== ruff";         ruff check . && ruff format --check .
echo "== mypy";         mypy
echo "== import-linter"; lint-imports
echo "== pytest";       pytest "$@"
