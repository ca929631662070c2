#!/usr/bin/env bash
# Build the platform image (Dockerfile) and the Triton serving image (Dockerfile.triton).
#
#   images/build.sh [platform|triton|all]            (make image runs `all`)
#
# Environment (all optional):
#   BASE            the base image. Default: python:3.11-slim-bookworm when a registry answers,
#                   else localhost/debian-base:bookworm, made here once with debootstrap
#                   (Debian's own packages, from the mirror apt already uses) and podman import.
#   EXTRAS          extras of the platform image (e.g. city-models)
#   TAG             image tag (default latest): citybrain:$TAG, citybrain-tritonserver:$TAG
#   CONTAINER_TOOL  buildah, podman or docker (default: the first one found, in that order)
#
# Where no registry can be reached (this project's build machines), buildah/podman build with
# `--isolation chroot --network host` (the default OCI runtime, crun, fails on cgroups v1 hybrid
# hosts). The machine's extra CA certificates (/usr/local/share/ca-certificates) are copied into
# images/ca/ for the build stages' pip and removed afterwards; the wheel folder named by
# PIP_FIND_LINKS (which holds torch's CPU build here) is mounted into the build read-only.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
what="${1:-all}"
tag="${TAG:-latest}"
extras="${EXTRAS:-}"
registry_base="python:3.11-slim-bookworm"
local_base="localhost/debian-base:bookworm"

say() { printf '[image] %s\n' "$*" >&2; }

tool="${CONTAINER_TOOL:-}"
if [ -z "$tool" ]; then
  for candidate in buildah podman docker; do
    if command -v "$candidate" >/dev/null 2>&1; then tool="$candidate"; break; fi
  done
fi
[ -n "$tool" ] || { say "no buildah, podman or docker; install them (make image does: apt-get install buildah podman debootstrap skopeo runc)"; exit 1; }

image_exists() {
  case "$tool" in
    buildah) buildah inspect --type image "$1" >/dev/null 2>&1 ;;
    *) "$tool" image inspect "$1" >/dev/null 2>&1 ;;
  esac
}

registry_reachable() {
  # A manifest lookup, no pull: a few seconds either way.
  if command -v skopeo >/dev/null 2>&1; then
    timeout 20 skopeo inspect --retry-times 0 "docker://docker.io/library/$registry_base" >/dev/null 2>&1
  else
    timeout 20 "$tool" pull -q "docker.io/library/$registry_base" >/dev/null 2>&1
  fi
}

apt_mirror() {
  local uri
  uri="$(grep -h -m1 '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | head -n1 || true)"
  if [ -z "$uri" ]; then
    uri="$(grep -h -m1 '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n1 || true)"
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

make_local_base() {
  command -v debootstrap >/dev/null 2>&1 || { say "debootstrap is missing (apt-get install debootstrap)"; exit 1; }
  local work mirror started
  work="$(mktemp -d /var/tmp/citybrain-base.XXXXXX)"
  mirror="$(apt_mirror)"
  started=$SECONDS
  say "no registry: debootstrapping Debian bookworm from $mirror (2 min here)"
  debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
  # Nothing of the build machine goes in: apt's lists and caches are emptied.
  rm -rf "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/archives/"*.deb
  case "$tool" in
    docker) tar -C "$work/rootfs" -c . | docker import - "$local_base" >/dev/null ;;
    *) tar -C "$work/rootfs" -c . | podman import - "$local_base" >/dev/null ;;
  esac
  rm -rf "$work"
  say "base $local_base imported in $((SECONDS - started)) s"
}

base="${BASE:-}"
if [ -z "$base" ]; then
  if image_exists "$registry_base" || image_exists "docker.io/library/$registry_base"; then
    base="$registry_base"
  elif image_exists "$local_base"; then
    base="$local_base"
  elif registry_reachable; then
    base="$registry_base"
  else
    make_local_base
    base="$local_base"
  fi
fi

args=(--build-arg "BASE=$base")
# A snapshot mirror's Release files are past their Valid-Until: apt here is told to accept that,
# and so is apt in the build.
if apt-config dump 2>/dev/null | grep -q 'Acquire::Check-Valid-Until "false"'; then
  args+=(--build-arg "APT_OPTIONS=-o Acquire::Check-Valid-Until=false -o Acquire::Check-Date=false")
fi
wheels="${PIP_FIND_LINKS:-}"
if [ -n "$wheels" ] && [ -d "$wheels" ] && ls "$wheels"/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then
  if [ "$tool" = docker ]; then
    say "docker cannot mount $wheels into a build; torch comes from TORCH_INDEX_URL's default"
  else
    # torch's CPU build lies there; PyTorch's own index is not reachable from this machine.
    args+=(--volume "$wheels:/opt/wheels:ro" --build-arg "PIP_FIND_LINKS=/opt/wheels"
           --build-arg "TORCH_INDEX_URL=")
  fi
fi

case "$tool" in
  buildah) build=(buildah bud --layers --isolation chroot --network host) ;;
  podman) build=(podman build --layers --isolation chroot --network host) ;;
  docker) build=(docker build) ;;
esac

ca_dir="$here/ca"
cleanup() { find "$ca_dir" -name '*.crt' -delete 2>/dev/null || true; }
trap cleanup EXIT
mkdir -p "$ca_dir"
if [ -d /usr/local/share/ca-certificates ]; then
  find /usr/local/share/ca-certificates -maxdepth 1 -name '*.crt' -exec cp {} "$ca_dir/" \;
fi

build_one() {
  local dockerfile="$1" image="$2"; shift 2
  local started=$SECONDS
  say "building $image from $dockerfile on $base with $tool"
  (cd "$root" && "${build[@]}" "${args[@]}" "$@" -f "$dockerfile" -t "$image" .)
  say "$image built in $((SECONDS - started)) s"
}

case "$what" in
  platform) build_one Dockerfile "citybrain:$tag" --build-arg "EXTRAS=$extras" ;;
  triton) build_one Dockerfile.triton "citybrain-tritonserver:$tag" ;;
  all)
    build_one Dockerfile "citybrain:$tag" --build-arg "EXTRAS=$extras"
    build_one Dockerfile.triton "citybrain-tritonserver:$tag"
    ;;
  *) say "usage: images/build.sh [platform|triton|all]"; exit 2 ;;
esac
