#!/usr/bin/env bash
# Install what the tests need on a fresh Debian machine: system packages, the Python package with its
# test extra, and the pinned local control plane (kube-apiserver, etcd, kubectl, helm, alertmanager,
# kube-controller-manager, kube-scheduler, kwok and its stages;
# cached).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for tool in wrk openssl buildah debootstrap podman; do
  command -v "$tool" >/dev/null 2>&1 || need_apt+=("$tool")
done
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: apt-get install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "setup: not root; skipping apt-get install ${need_apt[*]} (tests needing them skip)" >&2
  fi
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'
# The build backend ([build-system] requires) as wheels: tests/e2e/test_first_day_path.py runs the
# README's `pip install -e .` on a fresh clone offline, from this folder (PIP_FIND_LINKS).
python3 -m pip download -q --disable-pip-version-check --only-binary=:all: \
  --dest "${HOME}/.cache/kubefence/wheels" 'setuptools>=68' wheel

if command -v go >/dev/null 2>&1; then
  hack/build-control-plane.sh
else
  echo "setup: no Go toolchain; the end-to-end suite will skip (KUBEFENCE_E2E=1 makes it fail)" >&2
fi
