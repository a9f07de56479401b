"""What a tenant runs next to pmkeys, as pods: an nginx gateway and a workload that calls the API.

gateway   nginx (``pmkeys.local/gateway:dev``: Debian's nginx-light) with exactly the
          configuration ``docs/verifier.md`` documents (read from the page, as
          ``tests/verifier/gateway.py`` does): the verifier upstream by its Service DNS name,
          the chart's ``gateway`` caller token in place of the placeholder (so the whole file
          is a Secret), and a second server block standing in for the PenguinMails API: it
          echoes the identity headers the gateway set. Its pod and namespace carry the labels
          the chart's NetworkPolicy admits as verifier callers.
workload  Debian's Python (the image the Dockerfile builds on); it reads its key from the
          mounted Secret once at start, as an application does, then calls the gateway every
          0.3 s and prints one line per call: status, keyId and tenant the API saw. Never the key.
"""

from __future__ import annotations

from typing import Any

from pmkeys.api import vocabulary as v
from pmkeys_dev.node import IMAGES
from tests.verifier.gateway import DOCUMENTED_TOKEN, DOCUMENTED_VERIFIER, documented_block

GATEWAY_PORT = 8080
NGINX_CONF = """\
worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path /tmp/body;
    proxy_temp_path /tmp/proxy;
    fastcgi_temp_path /tmp/fastcgi;
    uwsgi_temp_path /tmp/uwsgi;
    scgi_temp_path /tmp/scgi;

    upstream api {{ server 127.0.0.1:8081; }}

    server {{
        listen 8081;
        location / {{
            default_type application/json;
            return 200 '{{"tenant":"$http_x_tenant_id","keyId":"$http_x_api_key_id"}}';
        }}
    }}

{documented}
}}
"""
#: Labels the chart's NetworkPolicy admits as verifier callers (values networkPolicy.verifierCallers).
CALLER_POD_LABELS = {"penguinmails.io/verifier-caller": "true"}
CALLER_NAMESPACE_LABELS = {"penguinmails.io/verifier-callers": "true"}

WORKLOAD_SCRIPT = """\
import json, time, urllib.request, urllib.error
key = open("/etc/api-key/api-key").read().strip()
print("workload started", flush=True)
while True:
    request = urllib.request.Request(URL, method="POST", data=b"{}", headers={"Authorization": "Bearer " + key})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            seen = json.loads(response.read())
            print(f"status={response.status} keyId={seen['keyId']} tenant={seen['tenant']}", flush=True)
    except urllib.error.HTTPError as error:
        print(f"status={error.code} reason={error.headers.get('X-Pmkeys-Reason', '')}", flush=True)
    except Exception as error:
        print(f"status=error {type(error).__name__}", flush=True)
    time.sleep(0.3)
"""

RESTRICTED_CONTAINER: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def documented_nginx(*, token: str) -> str:
    """docs/verifier.md's nginx configuration, listening on the gateway port, with ``token``."""
    text = documented_block("nginx")
    assert DOCUMENTED_VERIFIER in text and DOCUMENTED_TOKEN in text, "docs/verifier.md changed shape"
    text = text.replace(DOCUMENTED_TOKEN, token)
    return text.replace("server {\n", f"server {{\n    listen {GATEWAY_PORT};\n", 1)


def _deployment(name: str, namespace: str, pod_spec: dict[str, Any], **labels: str) -> dict[str, Any]:
    labels = {"app": name, **labels}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def gateway(namespace: str, *, token: str) -> list[dict[str, Any]]:
    """Secret (the configuration, with the caller token), Deployment and Service of the gateway."""
    conf = NGINX_CONF.format(documented=documented_nginx(token=token))
    pod = {
        "containers": [
            {
                "name": "nginx",
                "image": IMAGES["gateway"],
                "imagePullPolicy": "Never",
                "command": ["/usr/sbin/nginx", "-e", "stderr", "-c", "/etc/gateway/nginx.conf", "-g", "daemon off;"],
                "ports": [{"containerPort": GATEWAY_PORT}],
                "readinessProbe": {"tcpSocket": {"port": GATEWAY_PORT}, "periodSeconds": 2},
                "securityContext": RESTRICTED_CONTAINER,
                "volumeMounts": [
                    {"name": "conf", "mountPath": "/etc/gateway"},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
            }
        ],
        "volumes": [
            {"name": "conf", "secret": {"secretName": "gateway"}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "gateway", "namespace": namespace},
        "spec": {"selector": {"app": "gateway"}, "ports": [{"port": GATEWAY_PORT, "targetPort": GATEWAY_PORT}]},
    }
    config = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "gateway", "namespace": namespace},
        "stringData": {"nginx.conf": conf},
    }
    return [config, _deployment("gateway", namespace, pod, **CALLER_POD_LABELS), service]


def workload(namespace: str, *, secret: str, url: str, restart_on: str = "") -> list[dict[str, Any]]:
    """ConfigMap and Deployment of the workload that mounts ``secret`` and calls ``url``; with
    ``restart_on`` (a TenantApiKey's name) it opts in to restarts after that key's rotations."""
    script = f"URL = {url!r}\n" + WORKLOAD_SCRIPT
    pod = {
        "containers": [
            {
                "name": "app",
                "image": IMAGES["base"],
                "imagePullPolicy": "Never",
                "command": ["python3", "-u", "/app/main.py"],
                "securityContext": RESTRICTED_CONTAINER,
                "volumeMounts": [
                    {"name": "app", "mountPath": "/app"},
                    {"name": "api-key", "mountPath": "/etc/api-key", "readOnly": True},
                ],
            }
        ],
        "volumes": [
            {"name": "app", "configMap": {"name": "workload"}},
            {"name": "api-key", "secret": {"secretName": secret}},
        ],
        "terminationGracePeriodSeconds": 1,
    }
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "workload", "namespace": namespace},
        "data": {"main.py": script},
    }
    deployment = _deployment("workload", namespace, pod)
    if restart_on:
        deployment["metadata"]["annotations"] = {v.RESTART_OPT_IN_ANNOTATION: restart_on}
    return [config, deployment]
