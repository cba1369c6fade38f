"""`modeldeploy dev demo`, the README's main command, end to end on its own local cluster."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from modeldeploy_dev import BuildError, LocalCluster, dev, ensure_binaries, realnode
from modeldeploy_dev.build import ensure_autoscaling
from modeldeploy_dev.hoststate import HostState

# Its own cluster and real node: it runs before the session's cluster takes the host's one node.
pytestmark = [pytest.mark.cluster, pytest.mark.own_node]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "modeldeployments"
NODES = dev.DEFAULT_NODES  # what the demo fakes


def _expected() -> dict[str, str]:
    """What `modeldeploy select` decides offline for each example on the bundled nodes."""
    out = {}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        got = subprocess.run(
            [sys.executable, "-m", "modeldeploy", "select", "-f", str(path), "--nodes", str(NODES), "-o", "json"],
            capture_output=True,
            text=True,
            check=True,
        )
        out[name] = json.loads(got.stdout)["engine"] or "<none>"
    return out


def _run_demo(workdir: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """`dev demo`; past `timeout` its cluster is taken down before the test fails (the real node it holds is
    the host's one, and the rest of the tier needs it)."""
    argv = [sys.executable, "-m", "modeldeploy", "dev", "--dir", str(workdir)]
    try:
        return subprocess.run([*argv, "demo", "--timeout", "240"], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        subprocess.run([*argv, "down"], capture_output=True, timeout=180, check=False)
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        pytest.fail(f"`dev demo` ran past {timeout:.0f} s:\n{out}\n{err[-4000:]}")


def test_demo_decides_every_example_as_select_does_and_cleans_up(tmp_path: Path) -> None:
    # What the demo builds on a machine's first run (the control plane, KEDA, its HTTP add-on and
    # Prometheus from their Go modules) is built before its clock starts: on a fresh 2-core machine those
    # builds alone took more than the demo's 600 s. Where KEDA cannot be built the demo goes on without
    # scale from zero, and says so.
    ensure_binaries()
    with contextlib.suppress(BuildError):
        ensure_autoscaling()
    before = HostState.capture()
    workdir = tmp_path / "dev"
    proc = _run_demo(workdir, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:6] == ["NAMESPACE", "NAME", "ENGINE", "READY", "MODEL", "REASON"]
    table = {row.split()[1]: row.split() for row in lines[1:] if row and not row.startswith(" ") and row.split()}
    expected = _expected()
    for name, engine in expected.items():
        assert name in table, proc.stdout
        assert table[name][2] == engine, (name, table[name])
        if engine != "<none>":  # the demo's nodes have room for every example
            assert table[name][3] == "1/1" and table[name][5] == "<none>", table[name]
    assert "Why" in proc.stdout
    if realnode.available() is None:
        # The example that serves the real model ran on the real node from our images and answered through
        # its Service (docs/real-node.md); the operator itself ran there from its image (Helm chart).
        answer = next(line for line in lines if line.strip().startswith("model:"))
        assert "paris" in answer.lower(), proc.stdout
        assert any("apply → first token" in line and "scheduling" in line for line in lines), proc.stdout
        assert "real node real-cpu-1 Ready" in proc.stderr and "from its image (Helm chart)" in proc.stderr
        # ...checked as a user would: containerd ran our images there, not as root, logs and the ClusterIP work
        where = next(line for line in lines if "`kubectl exec … id -u`" in line)
        assert " on real-cpu-1 (containerd://2.4.2)" in where and "llamacpp:0.1.0" in where, where
        assert "id -u`: 1000;" in where and "/v1/models: HTTP 200" in where, where
    assert not workdir.exists() and not LocalCluster.alive_pids(workdir)
    # ...and the host is as it was: sysctls, iptables, links, mounts, cgroups, fixed paths.
    assert before.differences(HostState.capture()) == []
