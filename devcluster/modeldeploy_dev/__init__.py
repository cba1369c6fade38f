"""A local Kubernetes control plane for tests and `modeldeploy dev`: real binaries, loopback only.

Modules: build (the binaries from the published Go modules, cached by version), certs (a CA and the
per-run certificates and keys), cluster (etcd + kube-apiserver + kube-controller-manager +
kube-scheduler as processes), nodes (fake Node objects and the kubelet chores nobody else does),
dev (`modeldeploy dev up|demo|down|status`), provisioner (claims of the default `local-path`
StorageClass become directories), hubserver (a local Hugging Face Hub that counts downloads, its HTTP
side in hubhandler, repositories in hubrepos, Xet-backed files served by the local CAS in xetcas).
"""

from modeldeploy_dev.build import K8S_VERSION, BuildError, ensure_binaries
from modeldeploy_dev.cluster import ClusterError, LocalCluster

__all__ = ["K8S_VERSION", "BuildError", "ClusterError", "LocalCluster", "ensure_binaries"]
