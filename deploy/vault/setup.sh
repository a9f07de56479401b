#!/usr/bin/env bash
# Prepare Vault (or OpenBao) for pmkeys: a KV v2 mount, the Kubernetes auth method, the two
# least-privilege policies and one role per component bound to the Helm chart's ServiceAccounts.
# Idempotent: run it again after changing a setting.
#
#   export VAULT_ADDR=https://vault.example.com:8200 VAULT_TOKEN=<admin token>
#   deploy/vault/setup.sh                         # chart release "pmkeys" in pmkeys-system
#   RELEASE_NAMESPACE=platform FULLNAME=keys-pmkeys deploy/vault/setup.sh
#
# Settings (environment variables, defaults match the chart's defaults):
#   VAULT               CLI to use: vault or bao (default: vault)
#   RELEASE_NAMESPACE   namespace of the Helm release (pmkeys-system)
#   FULLNAME            the chart's fullname: the release name if it contains "pmkeys",
#                       else "<release>-pmkeys" (pmkeys); ServiceAccounts are <FULLNAME>-operator
#                       and <FULLNAME>-verifier
#   AUTH_MOUNT          Kubernetes auth mount = chart value vault.auth.mount (kubernetes)
#   KV_MOUNT, PREFIX    chart values vault.kvMount and vault.prefix (secret, pmkeys)
#   OPERATOR_ROLE, VERIFIER_ROLE  Vault role (and policy) names = chart values
#                       vault.auth.operatorRole / verifierRole (pmkeys-operator, pmkeys-verifier)
#   KUBERNETES_HOST     API server address as Vault sees it. Unset: leave auth/<mount>/config
#                       alone. For Vault running in the same cluster use
#                       https://kubernetes.default.svc (Vault then reviews tokens with its own
#                       ServiceAccount, which needs the system:auth-delegator ClusterRole).
#   KUBERNETES_CA_CERT  file with the API server's CA (Vault outside the cluster)
#   TOKEN_REVIEWER_JWT  a long-lived token of a ServiceAccount bound to system:auth-delegator
#                       (Vault outside the cluster)
#   TOKEN_TTL, TOKEN_MAX_TTL  Vault token lifetimes (1h, 24h); the components renew them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
VAULT=${VAULT:-vault}
RELEASE_NAMESPACE=${RELEASE_NAMESPACE:-pmkeys-system}
FULLNAME=${FULLNAME:-pmkeys}
AUTH_MOUNT=${AUTH_MOUNT:-kubernetes}
KV_MOUNT=${KV_MOUNT:-secret}
PREFIX=${PREFIX:-pmkeys}
OPERATOR_ROLE=${OPERATOR_ROLE:-pmkeys-operator}
VERIFIER_ROLE=${VERIFIER_ROLE:-pmkeys-verifier}
TOKEN_TTL=${TOKEN_TTL:-1h}
TOKEN_MAX_TTL=${TOKEN_MAX_TTL:-24h}

# The policies come from `pmkeys vault-policy`, the same code the tests prove; the .hcl files
# next to this script are its output for the default mount and prefix.
policy() {
  local component=$1
  if command -v pmkeys >/dev/null 2>&1; then
    pmkeys vault-policy "$component" --mount "$KV_MOUNT" --prefix "$PREFIX"
  elif [[ $KV_MOUNT == secret && $PREFIX == pmkeys ]]; then
    cat "$here/$component-policy.hcl"
  else
    echo "KV_MOUNT=$KV_MOUNT PREFIX=$PREFIX differ from the defaults: install pmkeys from this repository (pip install .)" \
      "so that \`pmkeys vault-policy\` can render the policies" >&2
    exit 1
  fi
}

secrets_enabled=$("$VAULT" secrets list -format=json)
auth_enabled=$("$VAULT" auth list -format=json)
if [[ $secrets_enabled != *"\"$KV_MOUNT/\""* ]]; then
  "$VAULT" secrets enable -path="$KV_MOUNT" -version=2 kv >/dev/null
fi
if [[ $auth_enabled != *"\"$AUTH_MOUNT/\""* ]]; then
  "$VAULT" auth enable -path="$AUTH_MOUNT" kubernetes >/dev/null
fi
if [[ -n ${KUBERNETES_HOST:-} ]]; then
  config=("kubernetes_host=$KUBERNETES_HOST")
  [[ -n ${KUBERNETES_CA_CERT:-} ]] && config+=("kubernetes_ca_cert=@$KUBERNETES_CA_CERT")
  # Outside the cluster there is no pod token or CA file to fall back on.
  [[ -n ${TOKEN_REVIEWER_JWT:-} ]] && config+=("token_reviewer_jwt=$TOKEN_REVIEWER_JWT" "disable_local_ca_jwt=true")
  "$VAULT" write "auth/$AUTH_MOUNT/config" "${config[@]}" >/dev/null
fi

for component in operator verifier; do
  role=$OPERATOR_ROLE
  [[ $component == verifier ]] && role=$VERIFIER_ROLE
  policy "$component" | "$VAULT" policy write "$role" - >/dev/null
  "$VAULT" write "auth/$AUTH_MOUNT/role/$role" \
    bound_service_account_names="$FULLNAME-$component" \
    bound_service_account_namespaces="$RELEASE_NAMESPACE" \
    token_policies="$role" token_ttl="$TOKEN_TTL" token_max_ttl="$TOKEN_MAX_TTL" >/dev/null
  echo "role $role: ServiceAccount $RELEASE_NAMESPACE/$FULLNAME-$component -> policy $role"
done
