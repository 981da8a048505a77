#!/usr/bin/env bash
# The kind workflow (needs Docker, kind, kubectl, helm; not run in CI, which has no Docker engine):
# create a kind cluster with auditing on, build the image and load it, install the chart with the
# suite's audit policy, and run the e2e suite against the cluster.
#
# Usage: tests/kind/run.sh [pytest args...]
# Env:   KIND_CLUSTER (kubefence-e2e)  KIND_NODE_IMAGE (kind's default)  KEEP=1 keeps the cluster
#        IMAGE (kubefence:dev)  BUILD=docker|buildah (docker)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CLUSTER=${KIND_CLUSTER:-kubefence-e2e}
IMAGE=${IMAGE:-kubefence:dev}
BUILD=${BUILD:-docker}
NAMESPACE=kubefence-system
WORK=${KUBEFENCE_KIND_WORK:-$HOME/.cache/kubefence/kind/$CLUSTER}
POLICY=$ROOT/tests/e2e/audit-policy.yaml

log() { printf 'kind-e2e: %s\n' "$*" >&2; }
for tool in kind kubectl helm; do
  command -v "$tool" >/dev/null 2>&1 || { log "$tool not found"; exit 3; }
done

mkdir -p "$WORK/audit"
KUBECONFIG_FILE=$WORK/kubeconfig
sed -e "s|__AUDIT_POLICY__|$POLICY|" -e "s|__AUDIT_DIR__|$WORK/audit|" \
  "$ROOT/tests/kind/kind-config.yaml" >"$WORK/kind-config.yaml"

if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "creating cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --config "$WORK/kind-config.yaml" \
    --kubeconfig "$KUBECONFIG_FILE" ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 120s
fi
if [[ ${KEEP:-0} != 1 ]]; then
  trap 'kind delete cluster --name "$CLUSTER"' EXIT
fi
export KUBECONFIG=$KUBECONFIG_FILE

log "building $IMAGE ($BUILD)"
if [[ $BUILD == docker ]]; then
  docker build -t "$IMAGE" "$ROOT"
  kind load docker-image "$IMAGE" --name "$CLUSTER"
else
  "$ROOT/hack/build-image.sh" "localhost/$IMAGE"
  podman save --format docker-archive -o "$WORK/image.tar" "localhost/$IMAGE"
  kind load image-archive "$WORK/image.tar" --name "$CLUSTER"
  IMAGE=localhost/$IMAGE
fi

log "installing the chart into $NAMESPACE"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
helm upgrade --install kubefence "$ROOT/charts/kubefence" --namespace "$NAMESPACE" \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" \
  --set image.pullPolicy=Never --set mode=enforce \
  --set-file auditPolicy="$POLICY" \
  --wait --timeout 180s
kubectl -n "$NAMESPACE" rollout status deployment/kubefence --timeout 120s

log "running the e2e suite against $CLUSTER"
# The audit log is written by the API server as root (mode 0600): read it as root, or skip the
# tests that need it by unsetting KUBEFENCE_E2E_AUDIT_LOG.
export KUBEFENCE_E2E_KUBECONFIG=$KUBECONFIG_FILE
export KUBEFENCE_E2E_AUDIT_LOG=$WORK/audit/audit.log
cd "$ROOT"
python -m pytest tests/e2e "$@"
