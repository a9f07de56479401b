#!/usr/bin/env bash
# Build the local environment's Go binaries from the Go module proxy into
# $PMKEYS_CACHE_DIR/bin (default .cache/bin):
#
#   control plane  etcd, kube-apiserver, kube-controller-manager, kubectl
#   node           kube-scheduler, kubelet, kube-proxy (same wrapper module), CoreDNS
#   helm           with the Kubernetes version ldflags of helm's own release build
#
# Each group is rebuilt only when its inputs change (one stamp per group: the pinned versions,
# its wrapper go.mod, the build commands below), so changing helm's flags does not relink
# kube-apiserver. `.stamp` is written last, once every group is built.
# `hack/build-binaries.sh GROUP...` builds only the named groups.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cache=${PMKEYS_CACHE_DIR:-$root/.cache}
bin=$cache/bin
mkdir -p "$bin"
# shellcheck source=versions.env
source "$here/versions.env"
export GOFLAGS=-mod=mod

# Kubernetes' own release ldflags, so every binary (and kubectl version) reports $KUBERNETES_VERSION.
minor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2)
k8s_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
k8s_ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
k8s_ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION"

build_etcd() {
  (cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3)
}

build_controlplane() {
  (cd "$here/k8s" && go build -trimpath -ldflags "$k8s_ldflags" -o "$bin/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl)
}

build_node() {
  # The same build settings as the control plane (cgo included), so the packages they share
  # come from the Go build cache instead of compiling Kubernetes twice.
  (cd "$here/k8s" && go build -trimpath -ldflags "$k8s_ldflags" -o "$bin/" \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-proxy)
}

build_coredns() {
  GOBIN=$bin CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
}

build_helm() {
  # A released helm reports the Kubernetes version of the client-go it was built with to
  # `helm template` / `helm lint` (.Capabilities.KubeVersion); without these flags it says
  # v1.20 and charts with a kubeVersion constraint refuse to render.
  local gomod client_go major kminor flags
  gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
  client_go=$(sed -n 's/^[[:space:]]*k8s.io\/client-go v\([0-9.]*\).*/\1/p' "$gomod")
  major=$(( $(echo "$client_go" | cut -d. -f1) + 1 ))
  kminor=$(echo "$client_go" | cut -d. -f2)
  flags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  flags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  flags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$major"
  flags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$kminor"
  flags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$major"
  flags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$kminor"
  GOBIN=$bin go install -trimpath -ldflags "$flags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

declare -A outputs=(
  [etcd]="etcd"
  [controlplane]="kube-apiserver kube-controller-manager kubectl"
  [node]="kube-scheduler kubelet kube-proxy"
  [coredns]="coredns"
  [helm]="helm"
)
declare -A inputs=(
  [etcd]="$here/etcd/go.mod $here/etcd/go.sum"
  [controlplane]="$here/k8s/go.mod $here/k8s/go.sum"
  [node]="$here/k8s/go.mod $here/k8s/go.sum"
  [coredns]=""
  [helm]=""
)
groups=(etcd controlplane node coredns helm)
[[ $# -gt 0 ]] && groups=("$@")

step_stamp() {
  # shellcheck disable=SC2086
  { cat "$here/versions.env" ${inputs[$1]}; declare -f "build_$1"; echo "$k8s_ldflags"; } | sha256sum | cut -c1-16
}

up_to_date() {
  local group=$1 b
  [[ -f $bin/.stamp-$group && $(cat "$bin/.stamp-$group") == $(step_stamp "$group") ]] || return 1
  for b in ${outputs[$group]}; do [[ -x $bin/$b ]] || return 1; done
}

for group in "${groups[@]}"; do
  [[ -n ${outputs[$group]:-} ]] || { echo "unknown group $group (one of ${!outputs[*]})" >&2; exit 2; }
  up_to_date "$group" && continue
  echo "building $group: ${outputs[$group]}" >&2
  start=$SECONDS
  "build_$group"
  step_stamp "$group" > "$bin/.stamp-$group"
  echo "built $group in $((SECONDS - start)) s" >&2
done

all_built=1
for group in "${!outputs[@]}"; do up_to_date "$group" || all_built=0; done
if [[ $all_built == 1 ]]; then
  cat "$bin"/.stamp-* | sha256sum | cut -c1-16 > "$bin/.stamp"
fi
