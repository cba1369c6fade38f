"""The cluster tier's control plane: one real etcd + kube-apiserver + controller-manager + scheduler per session.

The binaries come from modeldeploy_dev.build (built from the Kubernetes Go modules on the first
run, then cached). When they cannot be had, the tier fails in CI and is skipped elsewhere, saying why.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from kubernetes import client, config

from modeldeploy_dev import BuildError, LocalCluster, ensure_binaries
from modeldeploy_dev.provisioner import LocalPathProvisioner
from tests.support.tools import unavailable


def _say(message: str) -> None:
    print(f"[local cluster] {message}", file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    try:
        ensure_binaries(log=_say)
    except BuildError as exc:
        unavailable(f"the local control plane cannot be built: {exc}")
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), log=_say)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kube_api(local_cluster: LocalCluster) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(local_cluster.kubeconfig_path))


@pytest.fixture(scope="session")
def local_provisioner(kube_api: client.ApiClient, local_cluster: LocalCluster) -> Iterator[LocalPathProvisioner]:
    """The `local-path` StorageClass (the default) and its provisioner: claims bind to directories."""
    provisioner = LocalPathProvisioner(kube_api, local_cluster.workdir / "volumes", interval=0.5).start()
    try:
        yield provisioner
    finally:
        provisioner.stop()
