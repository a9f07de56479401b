#!/usr/bin/env bash
# Build the images the local node runs, without Docker and without a registry, into
# $PMKEYS_CACHE_DIR/images/*.tar (docker-archive files that `ctr images import` loads):
#
#   base     Debian bookworm (mmdebstrap) with Debian's Python 3.11, tagged with the name the
#            Dockerfile's FROM uses, so `buildah bud` builds the Dockerfile unchanged
#   pmkeys   the Dockerfile, built by buildah from that base    -> pmkeys.local/pmkeys:dev
#   gateway  nginx-light from Debian (the documented auth_request gateway) -> pmkeys.local/gateway:dev
#   pause    kubernetes' build/pause/linux/pause.c, gcc -static, FROM scratch -> pmkeys.local/pause:3.10
#
# Each image is rebuilt only when its inputs change (a stamp per image). buildah keeps its
# storage in $PMKEYS_CACHE_DIR/buildah, not in /var/lib/containers.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cache=${PMKEYS_CACHE_DIR:-$root/.cache}
out=$cache/images
mkdir -p "$out"
# shellcheck source=versions.env
source "$here/versions.env"
trap_dirs=()

base_ref=$(sed -n 's/^FROM \([^ ]*\).*/\1/p' "$root/Dockerfile" | sort -u)
[[ $(echo "$base_ref" | wc -l) == 1 ]] || { echo "Dockerfile: expected one base image, got: $base_ref" >&2; exit 1; }

# buildah writes a blob cache under /var/lib/containers and a lock under /etc/cni whatever its
# storage flags say: remove them afterwards if they were not there before.
for hard_wired in /var/lib/containers /etc/cni; do
  [[ -e $hard_wired ]] || trap_dirs+=("$hard_wired")
done
cleanup() { [[ ${#trap_dirs[@]} -eq 0 ]] || rm -rf "${trap_dirs[@]}"; }
trap cleanup EXIT

storage=(--root "$cache/buildah/storage" --runroot "$cache/buildah/run" --storage-driver overlay)
buildah() { command buildah "${storage[@]}" "$@"; }
# Debian's buildah defaults to crun, which fails on this kind of host (cgroups in hybrid mode).
runtime=(--runtime /usr/sbin/runc --network host)
# Machines whose outbound TLS is re-signed by a local CA: give builds the host's CA bundle.
ca_mount=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)

stamp_of() { { cat "$@" "$0" "$here/versions.env"; echo "$base_ref"; } | sha256sum | cut -c1-16; }
fresh() { [[ -f $out/$1.tar && -f $out/.stamp-$1 && $(cat "$out/.stamp-$1") == "$2" ]]; }
export_image() {  # image name, tar name
  rm -f "$out/$2.tar"
  buildah push -q "$1" "docker-archive:$out/$2.tar:$1" >/dev/null
}

rootfs_image() {  # name, packages (comma separated)
  local name=$1 include=$2 tmp
  tmp=$(mktemp -d)
  mmdebstrap --quiet --variant=minbase --include="$include" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    bookworm "$tmp/rootfs.tar"
  local ctr
  ctr=$(buildah from scratch)
  buildah add "$ctr" "$tmp/rootfs.tar" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
  buildah commit -q "$ctr" "$name" >/dev/null
  buildah rm "$ctr" >/dev/null
  rm -rf "$tmp"
}

build_base() {
  # python3-venv brings ensurepip, so `python -m venv` + pip work as in python:3.11-slim.
  rootfs_image "$base_ref" python3,python3-venv,ca-certificates
  # The Dockerfile calls `python`; the python image has it, Debian's python3 package does not.
  local ctr
  ctr=$(buildah from --pull-never "$base_ref")
  buildah run "${runtime[@]}" "$ctr" ln -sf /usr/bin/python3 /usr/local/bin/python
  buildah commit -q "$ctr" "$base_ref" >/dev/null
  buildah rm "$ctr" >/dev/null
  export_image "$base_ref" base
}

build_pmkeys() {
  buildah bud -q --pull-never "${runtime[@]}" "${ca_mount[@]}" --layers=false \
    -t pmkeys.local/pmkeys:dev -f "$root/Dockerfile" "$root" >/dev/null
  export_image pmkeys.local/pmkeys:dev pmkeys
}

build_gateway() {
  rootfs_image pmkeys.local/gateway:dev nginx-light
  export_image pmkeys.local/gateway:dev gateway
}

build_pause() {
  local src tmp ctr
  src=$(cd "$here/k8s" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
  tmp=$(mktemp -d)
  gcc -Os -static -DVERSION="$PAUSE_VERSION" -o "$tmp/pause" "$src"
  strip "$tmp/pause"
  ctr=$(buildah from scratch)
  buildah copy "$ctr" "$tmp/pause" /pause >/dev/null
  buildah config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
  buildah commit -q "$ctr" "pmkeys.local/pause:$PAUSE_VERSION" >/dev/null
  buildah rm "$ctr" >/dev/null
  rm -rf "$tmp"
  export_image "pmkeys.local/pause:$PAUSE_VERSION" pause
}

pmkeys_inputs() {  # what the Dockerfile copies, so a code change rebuilds the image
  (cd "$root" && git ls-files -co --exclude-standard pyproject.toml README.md operator Dockerfile .dockerignore \
    | grep -v __pycache__ | sort | xargs cat) | sha256sum | cut -c1-16
}

declare -A stamps=(
  [base]=$(stamp_of)
  [gateway]=$(stamp_of "$0")
  [pause]=$(stamp_of "$here/k8s/go.mod")
)
stamps[pmkeys]="${stamps[base]}-$(pmkeys_inputs)"

images=(base pmkeys gateway pause)
[[ $# -gt 0 ]] && images=("$@")
for image in "${images[@]}"; do
  [[ -n ${stamps[$image]:-} ]] || { echo "unknown image $image (one of ${!stamps[*]})" >&2; exit 2; }
  fresh "$image" "${stamps[$image]}" && continue
  if [[ $image == pmkeys ]] && ! { fresh base "${stamps[base]}" && buildah inspect "$base_ref" >/dev/null 2>&1; }; then
    echo "building image base" >&2; build_base; echo "${stamps[base]}" > "$out/.stamp-base"
  fi
  echo "building image $image" >&2
  start=$SECONDS
  "build_$image"
  echo "${stamps[$image]}" > "$out/.stamp-$image"
  echo "built image $image in $((SECONDS - start)) s" >&2
done
