#!/usr/bin/env bash
# The test command of the README: set up (idempotent, seconds when done before), lint, type-check,
# then the whole pytest suite, end-to-end against the real local kube-apiserver included.
set -euo pipefail
cd "$(dirname "$0")/.."

hack/setup.sh
export KUBEFENCE_E2E="${KUBEFENCE_E2E:-1}"

echo "== ruff";         ruff check . && ruff format --check .
echo "== mypy";         mypy
echo "== import-linter"; lint-imports
echo "== pytest";       pytest "$@"
