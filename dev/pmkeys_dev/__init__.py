"""The local environment: a real control plane, OpenBao and Redis on loopback.

No Docker on the machines this project is developed on, so the real servers are built from
the Go module proxy (etcd, kube-apiserver, kube-controller-manager, kubectl) or installed from
PyPI and Debian (OpenBao, Redis) and started as child processes on free loopback ports.
The same classes serve ``pmkeys dev up`` and the pytest fixtures.
"""
