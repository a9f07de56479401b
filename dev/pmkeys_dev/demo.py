"""``pmkeys dev up|down|env`` and ``pmkeys demo``: the local environment for people.

``dev up`` starts the control plane and OpenBao in the background (they outlive the command;
state in ``.cache/dev/state.json``), ``dev down`` stops them. ``demo`` adds the operator,
verifier and UI, applies ``examples/`` and shows what happened: the keys, their Events, and a
verification through the verifier — never a key's value. With ``--node`` both run the chart in
real pods instead (:mod:`.nodedemo`).
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
from kubernetes import client

from pmkeys.api import vocabulary as v
from pmkeys.kubeclient import api_client
from pmkeys_dev import binaries, bootstrap, chart, nodedemo
from pmkeys_dev.environment import LocalEnvironment, stop_from_state
from pmkeys_dev.processes import free_port

#: The demo calls its verifier as the caller "demo" (never printed).
CALLER_TOKEN = secrets.token_urlsafe(32)


def _state_path(args: argparse.Namespace) -> Path:
    return Path(args.state or binaries.cache_dir() / "dev" / "state.json")


def _start(args: argparse.Namespace) -> tuple[LocalEnvironment, dict[str, str]]:
    state = _state_path(args)
    if state.exists():
        stopped = _stop_previous(args)
        if stopped:
            print(f"stopped a previous environment ({len(stopped)} processes)")
    workdir = state.parent / "env"
    workdir.mkdir(parents=True, exist_ok=True)
    env = LocalEnvironment(workdir=workdir)
    print("starting etcd, kube-apiserver, kube-controller-manager and OpenBao ...", flush=True)
    env.start()
    urls: dict[str, str] = {}
    if args.components:
        # The chart's RBAC, and each component with its own ServiceAccount's token: the demo
        # runs with exactly the privileges an installation has.
        chart.apply_rbac(env.kubeconfig)
        configs = {
            name: env.kubeconfig_for_token(path.read_text(), env.workdir / f"{name}.kubeconfig")
            for name, path in env.token_files.items()
        }
        cost = str(args.bcrypt_cost)
        env.start_component("operator", PMKEYS_BCRYPT_COST=cost, PMKEYS_KUBECONFIG=str(configs["operator"]))
        port = free_port()
        urls["verifier"] = f"http://127.0.0.1:{port}"
        env.start_component(
            "verifier",
            ready_url=f"{urls['verifier']}/healthz",
            PMKEYS_PORT=str(port),
            PMKEYS_KUBECONFIG=str(configs["verifier"]),
            PMKEYS_CALLER_TOKENS=json.dumps({"demo": CALLER_TOKEN}),
        )
        port = free_port()
        urls["ui"] = f"http://127.0.0.1:{port}"
        env.start_component(
            "ui", ready_url=f"{urls['ui']}/healthz", PMKEYS_PORT=str(port), PMKEYS_KUBECONFIG=str(configs["ui"])
        )
    env.save_state(state)
    extra = json.loads(state.read_text())
    extra["urls"] = urls
    state.write_text(json.dumps(extra, indent=2))
    return env, urls


def up(args: argparse.Namespace) -> None:
    if getattr(args, "node", False):
        _stop_previous(args)
        nodedemo.up(args, _state_path(args))
        return
    env, urls = _start(args)
    _print_where(env, urls, _state_path(args))


def _stop_previous(args: argparse.Namespace) -> list[int]:
    """Stop what a previous ``dev up`` (with or without ``--node``) left running."""
    state = _state_path(args)
    if not state.exists():
        return []
    if json.loads(state.read_text()).get("node"):
        stopped = nodedemo.stop(state)
        state.unlink()
        return stopped
    return stop_from_state(state)


def down(args: argparse.Namespace) -> None:
    stopped = _stop_previous(args)
    print(f"stopped {len(stopped)} processes" if stopped else "nothing was running")


def print_env(args: argparse.Namespace) -> None:
    state = _state_path(args)
    if not state.exists():
        sys.exit("no local environment: run `pmkeys dev up` first")
    data = json.loads(state.read_text())
    print(f"export KUBECONFIG={data['kubeconfig']}")
    print(f"export BAO_ADDR={data['openbao']['url']} BAO_TOKEN={data['openbao']['root_token']}")


def _print_where(env: LocalEnvironment, urls: dict[str, str], state: Path) -> None:
    kubectl = binaries.built("kubectl")
    lines = [
        "",
        "The local environment is up:",
        f"  Kubernetes API   {env.controlplane.url}",
        f"  kubeconfig       {env.kubeconfig}",
        f"  kubectl          {kubectl} (or: eval $(pmkeys dev env); kubectl get tak -A)",
        f"  OpenBao          {env.openbao.url} (root token in {state})",
    ]
    lines += [f"  {name:<16} {url}" for name, url in urls.items()]
    lines += [f"  logs             {env.logs} and {env.workdir}/*/logs", "", "Stop everything: make down"]
    print("\n".join(lines))


def demo(args: argparse.Namespace) -> None:
    if getattr(args, "node", False):
        _stop_previous(args)
        nodedemo.demo(args, _state_path(args))
        return
    env, urls = _start(args)
    examples = Path(args.examples or binaries.REPO_ROOT / "examples")
    kubectl = [str(binaries.built("kubectl")), "--kubeconfig", str(env.kubeconfig)]
    print(f"applying {examples}/ ...", flush=True)
    api = api_client(str(env.kubeconfig))
    for first in ("00-tenant-namespace.yaml", "01-tenant-plan.yaml"):
        subprocess.run([*kubectl, "apply", "-f", str(examples / first)], check=True)
    bootstrap.wait_plan_in_force(api, "acme")
    subprocess.run([*kubectl, "apply", "-f", str(examples)], check=True)
    sign_in = _tenant_admin(api, "acme", env.workdir)
    _wait_settled(api, "acme")
    print()
    subprocess.run([*kubectl, "get", "tenantapikeys", "-n", "acme"], check=True)
    print("\nKubernetes Events:")
    subprocess.run([*kubectl, "get", "events", "-n", "acme", "--sort-by=.lastTimestamp"], check=True)
    if "verifier" in urls:
        _show_verification(api, urls["verifier"], CALLER_TOKEN)
    _print_where(env, urls, _state_path(args))
    print(f"\nSign in to the UI ({urls.get('ui')}) as acme's key admin with the token in {sign_in}")


def _tenant_admin(api: client.ApiClient, namespace: str, workdir: Path) -> Path:
    """A ServiceAccount bound to the chart's tenant-admin role in ``namespace``; its token file."""
    name = f"{namespace}-key-admin"
    bootstrap.apply_manifests(
        api,
        [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}},
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": name, "namespace": namespace},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "pmkeys-tenant-admin",
                },
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
            },
        ],
    )
    path = workdir / f"{name}.token"
    path.write_text(bootstrap.token(api, name, namespace=namespace, hours=12))
    path.chmod(0o600)
    return path


def _wait_settled(api: client.ApiClient, namespace: str, timeout: float = 120) -> None:
    custom = client.CustomObjectsApi(api)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = custom.list_namespaced_custom_object(v.GROUP, v.VERSION, namespace, v.PLURAL)["items"]
        phases = [(o.get("status") or {}).get("phase", "Pending") for o in items]
        settled = sum(p != "Pending" for p in phases)
        print(f"\r  {settled}/{len(items)} keys issued", end="", flush=True)
        if items and settled == len(items):
            print()
            return
        time.sleep(0.5)
    print("\n  (some keys are still pending; the operator log says why)")


def _show_verification(api: client.ApiClient, verifier: str, caller_token: str) -> None:
    secret = client.CoreV1Api(api).read_namespaced_secret("newsletter-sender", "acme")
    key = base64.b64decode(secret.data[v.SECRET_DATA_KEY]).decode()
    print("\nVerifying the newsletter-sender key (from its Secret) through the verifier:")
    for scope in ("send_email", "manage_contacts"):
        answer = httpx.post(
            f"{verifier}/v1/verify",
            json={"key": key, "scope": scope},
            headers={"X-Pmkeys-Caller-Token": caller_token},
            timeout=30,
        ).json()
        shown = {k: answer.get(k) for k in ("allowed", "reason", "tenant", "keyId")}
        print(f"  scope {scope:<16} -> {shown}")
