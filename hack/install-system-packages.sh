#!/usr/bin/env bash
# Debian packages the tests and the demo use: Redis (shared rate limits), nginx (a real
# auth_request gateway), Lua (the Argo CD health check), Chromium (browser tests), PostgreSQL
# (the audit store; the local environment runs its own server, so no system cluster is made),
# and the real node (docs/install.md): containerd + runc, the CNI plugins, nftables/iptables and
# conntrack for kube-proxy, buildah + mmdebstrap to build images without Docker, gcc for pause.
# Installs only what is missing; needs root (as on CI) or passwordless sudo.
set -euo pipefail
# command or file -> package
declare -A wanted=([redis-server]=redis-server [nginx]=nginx-light [lua5.4]=lua5.4 [chromium]=chromium
  [containerd]=containerd [runc]=runc [/usr/lib/cni/bridge]=containernetworking-plugins
  [nft]=nftables [iptables]=iptables [conntrack]=conntrack [buildah]=buildah [mmdebstrap]=mmdebstrap
  [gcc]=gcc [ip]=iproute2)
missing=()
for cmd in "${!wanted[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/sbin/$cmd || -x $cmd ]] || missing+=("${wanted[$cmd]}")
done
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || missing+=(postgresql)
[[ ${#missing[@]} -eq 0 ]] && exit 0
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
echo "installing Debian packages: ${missing[*]}" >&2
if [[ " ${missing[*]} " == *" postgresql "* ]]; then
  # The tests start PostgreSQL themselves; do not create (and start) the Debian main cluster.
  $sudo mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.d/pmkeys.conf >/dev/null
fi
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
