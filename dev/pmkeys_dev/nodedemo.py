"""``pmkeys dev up --node`` and ``pmkeys demo --node``: the chart in real pods on this machine.

``dev up --node`` starts the control plane, a real node (:mod:`.node`) and OpenBao + Redis on
the node IP, with Vault's Kubernetes auth set up as docs/vault.md says; it prints the
``helm install`` command for the image ``make image`` built. ``demo --node`` also runs that
command and applies ``examples/``. The processes outlive the command (state file as for
``dev up``); ``pmkeys dev down`` stops them and removes everything the node put on the host.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from pmkeys.kubeclient import api_client
from pmkeys_dev import binaries, bootstrap
from pmkeys_dev.nodeenv import CHART, REDIS_SECRET, RELEASE, SYSTEM_NAMESPACE, NodeEnvironment, stop_node_from_state


def start(state: Path) -> NodeEnvironment:
    workdir = state.parent / "node-env"
    if workdir.exists():
        raise SystemExit(f"{workdir} exists: run `pmkeys dev down` first")
    workdir.mkdir(parents=True)
    env = NodeEnvironment(workdir=workdir)
    print("starting the control plane, containerd, kubelet, kube-proxy, CoreDNS, OpenBao and Redis ...", flush=True)
    env.start(kind="dev")
    env.save_state(state)
    (workdir / "values.json").write_text(json.dumps(env.chart_values(), indent=2))
    return env


def stop(state: Path) -> list[int]:
    return stop_node_from_state(json.loads(state.read_text()))


def print_where(env: NodeEnvironment, *, installed: bool = False) -> None:
    helm = binaries.built("helm")
    kubectl = binaries.built("kubectl")
    verb = "upgrade" if installed else "install"
    print(
        "\n".join(
            [
                "",
                "The local node is up (pods run here, nothing they send leaves the machine):",
                f"  Kubernetes API   {env.controlplane.url}",
                f"  kubeconfig       {env.kubeconfig}",
                f"  kubectl          {kubectl} --kubeconfig {env.kubeconfig} get pods -A",
                f"  OpenBao          {env.openbao.url} (Kubernetes auth configured by deploy/vault/setup.sh)",
                f"  Redis            {env.redis.host}:{env.redis.port}"
                f" (URL and password: Secret {SYSTEM_NAMESPACE}/{REDIS_SECRET})",
                "",
                f"{verb.capitalize()} the chart with the image `make image` built:",
                f"  {helm} --kubeconfig {env.kubeconfig} {verb} {RELEASE} {CHART} -n {SYSTEM_NAMESPACE} \\",
                f"    -f {env.workdir / 'values.json'} --wait",
                "",
                "Stop everything: make down",
            ]
        )
    )


def up(args: argparse.Namespace, state: Path) -> None:
    print_where(start(state))


def demo(args: argparse.Namespace, state: Path) -> None:
    env = start(state)
    print("helm install charts/pmkeys (operator, 2 verifiers, UI) ...", flush=True)
    env.helm_install(env.chart_values())
    examples = Path(args.examples or binaries.REPO_ROOT / "examples")
    kubectl = [str(binaries.built("kubectl")), "--kubeconfig", str(env.kubeconfig)]
    # The tenant's namespace and the platform's plan first: the chart's admission policy refuses
    # keys in a namespace without one.
    for first in ("00-tenant-namespace.yaml", "01-tenant-plan.yaml"):
        subprocess.run([*kubectl, "apply", "-f", str(examples / first)], check=True)
    bootstrap.wait_plan_in_force(api_client(str(env.kubeconfig)), "acme")
    subprocess.run([*kubectl, "apply", "-f", str(examples)], check=True)
    subprocess.run([*kubectl, "get", "pods", "-n", SYSTEM_NAMESPACE, "-o", "wide"], check=True)
    subprocess.run(
        [*kubectl, "wait", "-n", "acme", "tenantapikeys", "--all", "--for=jsonpath={.status.phase}=Active",
         "--timeout=180s"],
        check=False,
    )  # fmt: skip
    subprocess.run([*kubectl, "get", "tenantapikeys", "-n", "acme"], check=True)
    print_where(env, installed=True)
