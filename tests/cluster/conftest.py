"""The cluster tier's control plane and real node: one real etcd + kube-apiserver + controller-manager +
scheduler per session, and, where this host can run one, a real node (kubelet, containerd, CNI,
kube-proxy) that runs pods from our images.

The binaries come from modeldeploy_dev.build (built from the Go modules on the first run, then cached),
the images from modeldeploy_dev.images (built with buildah on first use, then cached). What cannot be had
fails the tier in CI and skips it elsewhere, saying why.

The node's network is made before the control plane starts (the apiserver listens on the node's address,
where pods reach it); the node itself joins on the first test that asks for `real_node`. One real node
runs on a host at a time, so the tests that start a whole dev cluster of their own (`own_node` marker)
run first, before this session takes the node.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from kubernetes import client, config

from modeldeploy_dev import BuildError, LocalCluster, ensure_binaries, images, realnode
from modeldeploy_dev.cluster import SERVICE_CIDR
from modeldeploy_dev.provisioner import LocalPathProvisioner
from modeldeploy_dev.realnode import NodeError, RealNode
from tests.support.tools import unavailable


def _say(message: str) -> None:
    print(f"[local cluster] {message}", file=sys.stderr, flush=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start their own real node go first: the session's node is taken only after them."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("own_node") else 1)


@dataclass
class SessionNode:
    """The session's real node once prepared, or why there is none."""

    node: RealNode | None
    why_not: str | None
    joined: bool = False


_NODE: list[SessionNode] = []


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    try:
        ensure_binaries(log=_say)
    except BuildError as exc:
        unavailable(f"the local control plane cannot be built: {exc}")
    workdir = tmp_path_factory.mktemp("cluster")
    node: RealNode | None = None
    why_not = realnode.available()
    if why_not is None:
        try:
            node = RealNode(workdir / "node", images.PAUSE_IMAGE, log=_say).prepare(SERVICE_CIDR)
        except NodeError as exc:
            why_not = str(exc)
    _NODE[:] = [SessionNode(node, why_not)]
    cluster = LocalCluster(workdir, log=_say, address=node.address if node else "127.0.0.1")
    try:
        cluster.start()
    except BaseException:
        if node is not None:
            node.stop()
        raise
    try:
        yield cluster
    finally:
        if node is not None:
            left = node.stop()
            assert not left, f"the real node left the host changed: {left}"
        cluster.stop()


@pytest.fixture(scope="session")
def kube_api(local_cluster: LocalCluster) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(local_cluster.kubeconfig_path))


@pytest.fixture(scope="session")
def real_node(local_cluster: LocalCluster, kube_api: client.ApiClient) -> RealNode:
    """The session's real node, Ready, with our node images imported (built on first use)."""
    session = _NODE[0]
    if session.node is None:
        unavailable(f"no real node on this host: {session.why_not}")
    node = session.node
    assert node is not None and local_cluster.ca is not None
    if not session.joined:
        try:
            archives = images.ensure_images(images.NAMES, log=_say)
        except images.ImageBuildError as exc:
            unavailable(f"our images cannot be built here: {exc}")
        node.join(local_cluster.ca, local_cluster.server, list(archives.values()))
        node.wait_ready(client.CoreV1Api(kube_api))
        session.joined = True
    return node


@pytest.fixture(scope="session")
def local_provisioner(kube_api: client.ApiClient, local_cluster: LocalCluster) -> Iterator[LocalPathProvisioner]:
    """The `local-path` StorageClass (the default) and its provisioner: claims bind to directories."""
    provisioner = LocalPathProvisioner(kube_api, local_cluster.workdir / "volumes", interval=0.5).start()
    try:
        yield provisioner
    finally:
        provisioner.stop()
