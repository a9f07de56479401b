"""One way to build a Kubernetes API client for every component.

Order: an explicit kubeconfig path, in-cluster config (a pod's ServiceAccount), then the
user's default kubeconfig — so the same code runs in a pod, on a laptop against kind, and
against the local control plane.
"""

from __future__ import annotations

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

#: Connections kept per client. The components call the API from a thread pool; a pool smaller
#: than the threads discards connections and pays a TLS handshake (both sides) on the next call.
POOL_SIZE = 16


def api_client(kubeconfig: str = "") -> client.ApiClient:
    cfg = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    else:
        try:
            config.load_incluster_config(client_configuration=cfg)
        except ConfigException:
            config.load_kube_config(client_configuration=cfg)
    cfg.connection_pool_maxsize = POOL_SIZE
    return client.ApiClient(cfg)


def api_client_for_token(base: client.ApiClient, token: str) -> client.ApiClient:
    """A client for the same server as ``base`` that authenticates with a bearer token."""
    cfg = client.Configuration()
    src = base.configuration
    cfg.host = src.host
    cfg.ssl_ca_cert = src.ssl_ca_cert
    cfg.verify_ssl = src.verify_ssl
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    cfg.connection_pool_maxsize = POOL_SIZE
    return client.ApiClient(cfg)
