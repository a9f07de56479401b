#!/usr/bin/env bash
# Build etcd, kube-apiserver, kube-controller-manager, kubectl and helm from the Go module
# proxy into $PMKEYS_CACHE_DIR/bin (default .cache/bin), once per set of pinned versions.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cache=${PMKEYS_CACHE_DIR:-$root/.cache}
bin=$cache/bin
mkdir -p "$bin"
# shellcheck source=versions.env
source "$here/versions.env"

stamp=$(cat "$here/versions.env" "$here/k8s/go.mod" "$here/etcd/go.mod" "$0" | sha256sum | cut -c1-16)
if [[ -f $bin/.stamp && $(cat "$bin/.stamp") == "$stamp" ]]; then
  for b in etcd kube-apiserver kube-controller-manager kubectl helm; do
    [[ -x $bin/$b ]] || { rm -f "$bin/.stamp"; break; }
  done
  [[ -f $bin/.stamp ]] && exit 0
fi

export GOFLAGS=-mod=mod
echo "building etcd $ETCD_VERSION" >&2
(cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3)

minor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2)
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION"
echo "building kube-apiserver, kube-controller-manager, kubectl $KUBERNETES_VERSION" >&2
(cd "$here/k8s" && go build -trimpath -ldflags "$ldflags" -o "$bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kubectl)

echo "building helm $HELM_VERSION" >&2
GOBIN=$bin go install -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"

echo "$stamp" > "$bin/.stamp"
