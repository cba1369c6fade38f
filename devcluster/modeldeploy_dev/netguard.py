"""The real node's network on the host: its bridge, and rules that keep every pod packet on the machine.

The bridge is made before the control plane starts, because its address (nodeconfig.NODE_IP) is where
the apiserver, the kubelet and the dev servers listen so that pods reach them. The CNI bridge plugin
turns ip_forward on (isGateway); the FORWARD rules drop anything from or to the pod network that is not
on the bridge, and the INPUT rule refuses the node address from any interface but the bridge and
loopback, so nothing outside the machine reaches it. hoststate.py removes all of it afterwards.
"""

from __future__ import annotations

import subprocess

from modeldeploy_dev.nodeconfig import BRIDGE, CLUSTER_CIDR, NODE_IP, POD_CIDR

COMMENT = "modeldeploy real node: pod traffic stays on this machine"


def guard_rules(service_cidr: str) -> list[list[str]]:
    """iptables arguments (after `-I`) of the guard rules."""
    tag = ["-m", "comment", "--comment", COMMENT]
    return [
        ["FORWARD", "-s", CLUSTER_CIDR, "!", "-o", BRIDGE, *tag, "-j", "DROP"],
        ["FORWARD", "-d", CLUSTER_CIDR, "!", "-i", BRIDGE, *tag, "-j", "DROP"],
        ["FORWARD", "-d", service_cidr, "!", "-o", BRIDGE, *tag, "-j", "DROP"],
        ["INPUT", "-d", NODE_IP, "!", "-i", BRIDGE, *_not_lo(), *tag, "-j", "DROP"],
    ]


def _not_lo() -> list[str]:
    # `! -i lo` twice in one rule is not allowed; the address match on `lo` is the host talking to itself.
    return ["-m", "addrtype", "!", "--src-type", "LOCAL"]


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise OSError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")


def up(service_cidr: str) -> None:
    """The bridge with the node address, the service range routed onto it (a ClusterIP without a rule
    yet goes nowhere rather than out of the machine), and the guard rules."""
    prefix = POD_CIDR.split("/")[1]
    _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    _run(["ip", "addr", "add", f"{NODE_IP}/{prefix}", "dev", BRIDGE])
    _run(["ip", "link", "set", BRIDGE, "up"])
    _run(["ip", "route", "add", service_cidr, "dev", BRIDGE])
    for rule in guard_rules(service_cidr):
        _run(["iptables", "-I", *rule])
