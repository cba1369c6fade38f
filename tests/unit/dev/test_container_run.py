"""A local pod's container across its life: exit codes, termination messages, restarts per restartPolicy with
the kubelet's back-off, probes. Real processes through the sandbox (root only: skipped elsewhere, failed in CI);
the back-off is shortened so the restarts happen in a second."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from modeldeploy_dev import containers, sandbox
from modeldeploy_dev.containers import IMAGE_PATH, ContainerRun
from tests.support.tools import unavailable


@pytest.fixture(autouse=True)
def can_run(monkeypatch: pytest.MonkeyPatch) -> None:
    why = sandbox.available()
    if why:
        unavailable(f"local containers cannot run here: {why}")
    monkeypatch.setattr(containers, "BACKOFF_START_S", 0.2)


def _run_until(c: ContainerRun, done: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c.step({}, "", lambda _spec: {"PATH": IMAGE_PATH}, lambda _port: None)
        if done(c):
            return
        time.sleep(0.05)
    pytest.fail(f"container state after {timeout} s: {c.status(True)}")


def _container(tmp_path: Path, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": "c", "image": "ghcr.io/modeldeploy/fetch:0", "command": ["sh", "-c", script], **extra}


def test_a_failing_app_container_restarts_with_back_off_and_keeps_its_last_state(tmp_path: Path) -> None:
    c = ContainerRun(_container(tmp_path, "echo oops > /dev/termination-log; exit 3"), tmp_path, "Always", init=False)
    _run_until(c, lambda c: c.restart_count >= 2 and c.proc is None)
    status = c.status(True)
    last = status["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"], last["message"]) == (3, "Error", "oops\n")
    # Three runs ended (the first and two restarts): the back-off doubled after each.
    assert c.backoff_s == pytest.approx(0.2 * 2**2)
    assert [reason for reason, _ in c.events] == ["BackOff"] * 3


def test_an_init_container_under_never_fails_the_pod_once(tmp_path: Path) -> None:
    spec = _container(tmp_path, "echo to the log; exit 7", terminationMessagePolicy="FallbackToLogsOnError")
    c = ContainerRun(spec, tmp_path, "Never", init=True)
    _run_until(c, lambda c: c.failed_for_good)
    terminated = c.status(True)["state"]["terminated"]
    assert terminated["exitCode"] == 7 and terminated["message"] == "to the log"  # the log's tail, no file
    assert c.restart_count == 0


def test_a_successful_init_container_is_done(tmp_path: Path) -> None:
    c = ContainerRun(_container(tmp_path, "exit 0"), tmp_path, "Always", init=True)
    _run_until(c, lambda c: c.succeeded)
    assert c.status(True)["state"]["terminated"]["reason"] == "Completed"


def test_a_killed_container_reports_128_plus_the_signal(tmp_path: Path) -> None:
    # `$$$$` is the shell's `$$` once Kubernetes' own `$$` escape is undone.
    c = ContainerRun(_container(tmp_path, "kill -9 $$$$"), tmp_path, "Never", init=False)
    _run_until(c, lambda c: c.failed_for_good)
    assert c.status(True)["state"]["terminated"]["exitCode"] == 137


def test_no_probe_means_ready_once_running_and_a_startup_probe_gates_it(tmp_path: Path) -> None:
    plain = ContainerRun(_container(tmp_path / "a", "sleep 30"), tmp_path / "a", "Always", init=False)
    _run_until(plain, lambda c: c.ready)
    plain.kill(1)
    probe = {"httpGet": {"path": "/health", "port": 8000}, "periodSeconds": 1, "failureThreshold": 100}
    gated = ContainerRun(
        _container(tmp_path / "b", "sleep 30", startupProbe=probe), tmp_path / "b", "Always", init=False
    )
    _run_until(gated, lambda c: bool(c.events))  # port_for gives no way in: the probe fails, and says why
    assert not gated.ready and not gated.started
    assert gated.events[0] == ("Unhealthy", "Startup probe failed: no port 8000 in the container's ports")
    gated.kill(1)
