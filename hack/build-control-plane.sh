#!/usr/bin/env bash
# Builds the local control plane of the e2e tests (kube-apiserver, kubectl, etcd; for the cluster
# tier also kube-controller-manager, kube-scheduler and kwok, the simulated kubelets, with the
# Stage files of kwok's module source), helm and Alertmanager (the alert sink of
# `kubefence monitor --alertmanager`) from source through the Go module proxy, into versioned
# folders under
# ${KUBEFENCE_CACHE:-$HOME/.cache/kubefence}/ with stable symlinks in .../bin/.
# Idempotent: builds only what is missing. Needs Go (>= the `go` line of k8s.io/kubernetes'
# go.mod, or GOTOOLCHAIN=auto to fetch it) and the Go module proxy; no cgo, no Docker.
#
# Usage: hack/build-control-plane.sh [kubernetes] [etcd] [helm] [alertmanager] [kwok]  (default: all)
set -euo pipefail

KUBERNETES_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
HELM_VERSION=v3.22.0
ALERTMANAGER_VERSION=v0.35.0
KWOK_VERSION=v0.8.0

CACHE=${KUBEFENCE_CACHE:-$HOME/.cache/kubefence}
BIN=$CACHE/bin

if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
  PATH=/usr/local/go/bin:$PATH
fi
command -v go >/dev/null 2>&1 || { echo "build-control-plane: go not found" >&2; exit 1; }

export CGO_ENABLED=0
# Do not let a caller's GOFLAGS (-mod=vendor, ...) or a surrounding go.work steer the wrappers.
export GOFLAGS=-buildvcs=false
export GOWORK=off

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kubefence-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

mkdir -p "$BIN"

log() { printf 'build-control-plane: %s\n' "$*" >&2; }

now() { date +%s.%N; }

elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

size() { du -h "$1" | cut -f1; }

# link NAME TARGET_DIR: bin/NAME -> ../TARGET_DIR/NAME (relative, so the cache folder can move).
link() { ln -sfn "../$2/$1" "$BIN/$1"; }

# have DIR NAME...: true when every binary is already built.
have() {
  local dir=$1
  shift
  local name
  for name in "$@"; do
    [[ -x "$CACHE/$dir/$name" ]] || return 1
  done
}

# have_files DIR FILE...: true when every file is already there.
have_files() {
  local dir=$1
  shift
  local name
  for name in "$@"; do
    [[ -f "$CACHE/$dir/$name" ]] || return 1
  done
}

# install_into DIR: atomically move the binaries built in $WORK/out-DIR to $CACHE/DIR.
install_into() {
  local dir=$1
  mkdir -p "$CACHE/$dir"
  local f
  for f in "$WORK/out-$dir"/*; do
    mv -f "$f" "$CACHE/$dir/$(basename "$f")"
  done
}

report() {
  local dir=$1 seconds=$2
  shift 2
  local name
  for name in "$@"; do
    log "$name: $(size "$CACHE/$dir/$name") in $CACHE/$dir (built in ${seconds}s)"
  done
}

# gomod_of MODULE@VERSION: path of that module's go.mod in the module cache (downloads it).
gomod_of() {
  local f
  f=$(go mod download -json "$1" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [[ -f $f ]] || { log "no go.mod for $1"; exit 1; }
  printf '%s\n' "$f"
}

# source_of MODULE@VERSION: that module's source folder in the module cache (downloads it).
source_of() {
  local d
  d=$(go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  [[ -d $d ]] || { log "no source for $1"; exit 1; }
  printf '%s\n' "$d"
}

# The Kubernetes binaries, all from the one wrapper module below: kube-apiserver and kubectl (the
# API-server tier), kube-controller-manager and kube-scheduler (the cluster tier).
KUBERNETES_BINARIES=(kube-apiserver kubectl kube-controller-manager kube-scheduler)

build_kubernetes() {
  local dir=kubernetes-$KUBERNETES_VERSION
  local -a missing=()
  local name
  for name in "${KUBERNETES_BINARIES[@]}"; do
    if have "$dir" "$name"; then
      link "$name" "$dir"
      log "$name $KUBERNETES_VERSION: present"
    else
      missing+=("$name")
    fi
  done
  ((${#missing[@]} > 0)) || return 0
  log "building ${missing[*]} $KUBERNETES_VERSION"
  local gomod
  gomod=$(gomod_of "k8s.io/kubernetes@$KUBERNETES_VERSION")

  # k8s.io/kubernetes requires its staging modules at v0.0.0 (replaced by ./staging/... in its own
  # go.mod, which a dependent module ignores): pin each to v0.N.P for Kubernetes v1.N.P.
  local staging_version=v0.${KUBERNETES_VERSION#v1.}
  local -a staging
  mapfile -t staging < <(awk '
    /^require[[:space:]]*\(/ { inreq = 1; next }
    inreq && /^\)/ { inreq = 0; next }
    inreq && $1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print $1 }
    /^require[[:space:]]+k8s\.io\// && $3 == "v0.0.0" { print $2 }
  ' "$gomod" | sort -u)
  ((${#staging[@]} > 0)) || { log "found no k8s.io/* v0.0.0 requirements in $gomod"; exit 1; }
  log "replacing ${#staging[@]} staging modules with $staging_version"

  local mod=$WORK/kubernetes
  mkdir -p "$mod"
  {
    echo "module kubefence-build/kubernetes"
    echo
    # The `go` line, any `toolchain` line, and the `godebug` line or block of k/k.
    awk '
      /^go[[:space:]]/ || /^toolchain[[:space:]]/ { print; next }
      /^godebug[[:space:]]*\(/ { ingd = 1 }
      ingd { print; if ($0 ~ /^\)/) ingd = 0; next }
      /^godebug[[:space:]]/ { print }
    ' "$gomod"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    echo "replace ("
    local m
    for m in "${staging[@]}"; do
      echo "	$m => $m $staging_version"
    done
    echo ")"
  } >"$mod/go.mod"

  local date minor=${KUBERNETES_VERSION#v1.}
  minor=${minor%%.*}
  date=$(date -u ${SOURCE_DATE_EPOCH:+--date=@$SOURCE_DATE_EPOCH} +%Y-%m-%dT%H:%M:%SZ)
  local ldflags="-s -w" pkg kv
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    for kv in "gitVersion=$KUBERNETES_VERSION" gitMajor=1 "gitMinor=$minor" \
      "buildDate=$date" gitTreeState=archive; do
      ldflags+=" -X $pkg.$kv"
    done
  done

  # One binary per `go build`, so that each one's build time is reported on its own (the packages
  # they share are compiled once, by the first, and taken from Go's build cache by the next).
  local start
  for name in "${missing[@]}"; do
    start=$(now)
    mkdir -p "$WORK/out-$dir"
    (
      cd "$mod"
      go build -mod=mod -trimpath -ldflags "$ldflags" -o "$WORK/out-$dir/$name" \
        "k8s.io/kubernetes/cmd/$name"
    )
    install_into "$dir"
    link "$name" "$dir"
    report "$dir" "$(elapsed "$start")" "$name"
  done
}

build_etcd() {
  local dir=etcd-$ETCD_VERSION
  if have "$dir" etcd; then
    link etcd "$dir"
    log "etcd $ETCD_VERSION: present"
    return
  fi
  local start
  start=$(now)
  log "building etcd $ETCD_VERSION"
  # go.etcd.io/etcd/server/v3 is itself a main package. Its released go.mod requires the sibling
  # modules (api/v3, client/v3, client/pkg/v3, pkg/v3) at the same version (its `replace ../api`
  # lines only apply inside the etcd repo), so no replace is needed; they are required here
  # anyway so that nothing else can raise one of them. The `go` line is copied from its go.mod.
  local gomod goline
  gomod=$(gomod_of "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
  goline=$(grep -m1 '^go ' "$gomod")
  local mod=$WORK/etcd
  mkdir -p "$mod"
  cat >"$mod/go.mod" <<EOF
module kubefence-build/etcd

$goline

require (
	go.etcd.io/etcd/api/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/pkg/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/v3 $ETCD_VERSION
	go.etcd.io/etcd/pkg/v3 $ETCD_VERSION
	go.etcd.io/etcd/server/v3 $ETCD_VERSION
)
EOF
  mkdir -p "$WORK/out-$dir"
  (
    cd "$mod"
    go build -mod=mod -trimpath -ldflags "-s -w" -o "$WORK/out-$dir/etcd" go.etcd.io/etcd/server/v3
  )
  install_into "$dir"
  link etcd "$dir"
  report "$dir" "$(elapsed "$start")" etcd
}

build_helm() {
  local dir=helm-$HELM_VERSION
  if have "$dir" helm; then
    link helm "$dir"
    log "helm $HELM_VERSION: present"
    return
  fi
  local start
  start=$(now)
  log "building helm $HELM_VERSION"
  # Helm's Makefile sets the version, and the default Kubernetes version of `helm template` /
  # `helm lint` (else v1.20) from the k8s.io/client-go it requires: v0.N.P -> 1.N.
  local gomod client_go k8s_minor
  gomod=$(gomod_of "helm.sh/helm/v3@$HELM_VERSION")
  client_go=$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$gomod")
  k8s_minor=${client_go#v0.}
  k8s_minor=${k8s_minor%%.*}
  local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" pkg
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
  done
  mkdir -p "$WORK/out-$dir"
  (
    cd "$WORK"
    GOBIN="$WORK/out-$dir" go install -trimpath -ldflags "$ldflags" \
      "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  )
  install_into "$dir"
  link helm "$dir"
  report "$dir" "$(elapsed "$start")" helm
}

build_alertmanager() {
  local dir=alertmanager-$ALERTMANAGER_VERSION
  if have "$dir" alertmanager; then
    link alertmanager "$dir"
    log "alertmanager $ALERTMANAGER_VERSION: present"
    return
  fi
  local start
  start=$(now)
  log "building alertmanager $ALERTMANAGER_VERSION"
  # `go install .../cmd/alertmanager@version` fails: ui/web.go embeds app/dist (the built web UI),
  # which the module zip leaves out. Build from a writable copy of the module source with an empty
  # placeholder UI (the tests use only the v2 API), as the main module so its go.mod and go.sum
  # apply unchanged.
  local src
  src=$(source_of "github.com/prometheus/alertmanager@$ALERTMANAGER_VERSION")
  local mod=$WORK/alertmanager
  cp -R "$src" "$mod"
  chmod -R u+w "$mod"
  local ui
  for ui in elm mantine; do
    mkdir -p "$mod/ui/app/dist/$ui"
    printf '<!doctype html><title>Alertmanager</title><p>UI not built (kubefence test build)</p>\n' \
      >"$mod/ui/app/dist/$ui/index.html"
  done
  local ldflags="-s -w" kv
  for kv in "Version=${ALERTMANAGER_VERSION#v}" "Revision=$ALERTMANAGER_VERSION" Branch=archive \
    BuildUser=kubefence; do
    ldflags+=" -X github.com/prometheus/common/version.$kv"
  done
  mkdir -p "$WORK/out-$dir"
  (
    cd "$mod"
    go build -mod=mod -trimpath -ldflags "$ldflags" -o "$WORK/out-$dir/alertmanager" \
      ./cmd/alertmanager
  )
  install_into "$dir"
  link alertmanager "$dir"
  report "$dir" "$(elapsed "$start")" alertmanager
}

# kwok's own Stage files (its module source, kustomize/stage/), copied next to the binary: the
# `kwok` binary embeds none and exits "no stages found" without them. Fast node initialisation,
# heartbeat with a Lease (as a kubelet keeps one), and the fast Pod lifecycle: Running and Ready,
# Succeeded for a Pod whose containers all finish (a Job's), and deletions that finish.
KWOK_STAGES=(
  node/fast/node-initialize.yaml
  node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
  pod/fast/pod-ready.yaml
  pod/fast/pod-complete.yaml
  pod/fast/pod-delete.yaml
)

build_kwok() {
  local dir=kwok-$KWOK_VERSION stage f
  local -a stages=()
  for stage in "${KWOK_STAGES[@]}"; do
    stages+=("stages/$(basename "$stage")")
  done
  if have "$dir" kwok && have_files "$dir" "${stages[@]}"; then
    link kwok "$dir"
    ln -sfn "../$dir/stages" "$BIN/kwok-stages"
    log "kwok $KWOK_VERSION: present"
    return
  fi
  local start
  start=$(now)
  log "building kwok $KWOK_VERSION"
  local src
  src=$(source_of "sigs.k8s.io/kwok@$KWOK_VERSION")
  mkdir -p "$WORK/out-$dir/stages"
  for stage in "${KWOK_STAGES[@]}"; do
    [[ -f $src/kustomize/stage/$stage ]] || { log "kwok $KWOK_VERSION has no stage $stage"; exit 1; }
    cp "$src/kustomize/stage/$stage" "$WORK/out-$dir/stages/"
    chmod u+w "$WORK/out-$dir/stages/$(basename "$stage")"
  done
  mkdir -p "$CACHE/$dir/stages"
  for f in "$WORK/out-$dir/stages"/*; do
    mv -f "$f" "$CACHE/$dir/stages/"
  done
  rmdir "$WORK/out-$dir/stages"
  if ! have "$dir" kwok; then
    (
      cd "$WORK"
      GOBIN="$WORK/out-$dir" go install -trimpath \
        -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
        "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
    )
    install_into "$dir"
  fi
  link kwok "$dir"
  ln -sfn "../$dir/stages" "$BIN/kwok-stages"
  report "$dir" "$(elapsed "$start")" kwok
}

components=("$@")
((${#components[@]} > 0)) || components=(kubernetes etcd helm alertmanager kwok)
total=$(now)
for c in "${components[@]}"; do
  case $c in
    kubernetes) build_kubernetes ;;
    etcd) build_etcd ;;
    helm) build_helm ;;
    alertmanager) build_alertmanager ;;
    kwok) build_kwok ;;
    *)
      log "unknown component $c (want kubernetes, etcd, helm, alertmanager or kwok)"
      exit 2
      ;;
  esac
done
log "done in $(elapsed "$total")s; binaries in $BIN"
