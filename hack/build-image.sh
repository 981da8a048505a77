#!/usr/bin/env bash
# Builds the kubefence container image without a Docker engine: buildah with chroot isolation, on a
# Debian bookworm base made locally by debootstrap (no registry involved), cached under
# ${KUBEFENCE_CACHE:-$HOME/.cache/kubefence}/base/. Prints the build time and the image size.
#
# Usage: hack/build-image.sh [IMAGE]        (default localhost/kubefence:dev)
# Env:   KUBEFENCE_BASE=registry-image      build on that base instead (e.g. python:3.11-slim-bookworm)
#        KUBEFENCE_DEBIAN_MIRROR=URL        debootstrap mirror (default http://deb.debian.org/debian)
#
# With Docker elsewhere the same Dockerfile builds with its default base:
#   docker build -t kubefence:dev .
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
IMAGE=${1:-localhost/kubefence:dev}
CACHE=${KUBEFENCE_CACHE:-$HOME/.cache/kubefence}
SUITE=bookworm
LOCAL_BASE=localhost/kubefence-base:$SUITE
BASE_TAR=$CACHE/base/kubefence-base-$SUITE.tar
MIRROR=${KUBEFENCE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# What the Dockerfile's stages need from the base: python3 with venv (pip comes with ensurepip).
PACKAGES=python3,python3-venv,ca-certificates

log() { printf 'build-image: %s\n' "$*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

for tool in buildah podman; do
  command -v "$tool" >/dev/null 2>&1 || {
    log "$tool not found (Debian: apt-get install -y buildah podman debootstrap)"
    exit 3
  }
done

# make_base: the debootstrap rootfs as a tarball in the cache, imported as $LOCAL_BASE.
make_base() {
  if buildah inspect --type image "$LOCAL_BASE" >/dev/null 2>&1; then
    log "base $LOCAL_BASE present"
    return
  fi
  local t0
  t0=$(now)
  if [[ ! -s $BASE_TAR ]]; then
    command -v debootstrap >/dev/null 2>&1 || { log "debootstrap not found"; exit 3; }
    local dir
    dir=$(mktemp -d "${TMPDIR:-/tmp}/kubefence-base.XXXXXX")
    log "debootstrap $SUITE ($PACKAGES) from $MIRROR"
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$dir" "$MIRROR" >"$dir.log" 2>&1 || {
      tail -20 "$dir.log" >&2
      rm -rf "$dir" "$dir.log"
      exit 1
    }
    # An image, not a machine: no apt lists, caches, docs or logs.
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/* "$dir"/var/log/* \
      "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/*
    mkdir -p "$(dirname "$BASE_TAR")"
    tar --numeric-owner -C "$dir" -cf "$BASE_TAR.part" .
    mv -f "$BASE_TAR.part" "$BASE_TAR"
    rm -rf "$dir" "$dir.log"
  fi
  podman import --change 'CMD ["/bin/bash"]' "$BASE_TAR" "$LOCAL_BASE" >/dev/null
  log "base $LOCAL_BASE made in $(elapsed "$t0")s ($(du -h "$BASE_TAR" | cut -f1) rootfs tar)"
}

BASE=${KUBEFENCE_BASE:-}
if [[ -z $BASE ]]; then
  make_base
  BASE=$LOCAL_BASE
fi

# RUN steps see the network but not this machine's pip configuration (a proxy CA, a wheelhouse):
# mount it read-only when there is one. A user's normal build needs none of this.
mounts=()
pip_conf=${PIP_CONFIG_FILE:-/etc/pip.conf}
if [[ -f $pip_conf ]]; then
  mounts+=(-v "$pip_conf:/etc/pip.conf:ro")
  cert=$(sed -n 's/^[[:space:]]*cert[[:space:]]*=[[:space:]]*//p' "$pip_conf" | tail -1)
  [[ -n $cert && -f $cert ]] && mounts+=(-v "$cert:$cert:ro")
fi
if [[ -n ${PIP_CERT:-} && -f $PIP_CERT ]]; then
  mounts+=(-v "$PIP_CERT:$PIP_CERT:ro")
fi

old_id=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
t0=$(now)
log "buildah bud --build-arg BASE=$BASE -t $IMAGE"
buildah bud --isolation chroot --layers=false --build-arg "BASE=$BASE" "${mounts[@]}" \
  -f "$ROOT/Dockerfile" -t "$IMAGE" "$ROOT" >&2
build_s=$(elapsed "$t0")
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
new_id=$(podman image inspect --format '{{.Id}}' "$IMAGE")
# The previous build under this name, now untagged: drop it (only it; other images stay).
if [[ -n $old_id && $old_id != "$new_id" ]]; then
  podman rmi "$old_id" >/dev/null 2>&1 || true
fi
log "built $IMAGE in ${build_s}s; size $(awk -v s="$size" 'BEGIN { printf "%.1f MB", s / 1e6 }')"
echo "$IMAGE"
