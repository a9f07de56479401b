"""One way to build a Kubernetes API client for every component.

Order: an explicit kubeconfig path, in-cluster config (a pod's ServiceAccount), then the
user's default kubeconfig — so the same code runs in a pod, on a laptop against kind, and
against the local control plane.
"""

from __future__ import annotations

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException


def api_client(kubeconfig: str = "") -> client.ApiClient:
    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    try:
        config.load_incluster_config()
        return client.ApiClient()
    except ConfigException:
        return config.new_client_from_config()


def api_client_for_token(base: client.ApiClient, token: str) -> client.ApiClient:
    """A client for the same server as ``base`` that authenticates with a bearer token."""
    cfg = client.Configuration()
    src = base.configuration
    cfg.host = src.host
    cfg.ssl_ca_cert = src.ssl_ca_cert
    cfg.verify_ssl = src.verify_ssl
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(cfg)
