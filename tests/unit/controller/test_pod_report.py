"""What the pods tell the status: the auto-NGL decision, and why pods cannot be placed."""

from __future__ import annotations

import json
from typing import Any

from modeldeploy.controller.pod_report import (
    has_auto_ngl,
    n_gpu_layers,
    parse_message,
    pods_query,
    unschedulable,
    worth_a_reconcile,
)
from modeldeploy.controller.status import Observation, compute_status


def pod(created: str, message: str | None, exit_code: int = 0, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = created
    state = {"terminated": {"exitCode": exit_code, "message": message}} if message is not None else {"running": {}}
    return {"metadata": meta, "status": {"initContainerStatuses": [{"name": "auto-ngl", "state": state}]}}


def msg(n: Any) -> str:
    return json.dumps({"n_gpu_layers": n, "tensor_split": [], "fallback": False})


def test_message_parsing_refuses_what_is_not_a_layer_count() -> None:
    assert parse_message(msg(33)) == 33
    assert parse_message(msg(0)) == 0
    for bad in (None, "", "not json", "[]", msg(-1), msg(True), msg("33"), msg(2.5)):
        assert parse_message(bad) is None, bad


def test_newest_finished_pod_wins() -> None:
    pods = [pod("2026-01-01T00:00:00Z", msg(10)), pod("2026-01-02T00:00:00Z", msg(20))]
    assert n_gpu_layers(pods) == 20
    assert n_gpu_layers(list(reversed(pods))) == 20


def test_running_failed_and_terminating_pods_do_not_count() -> None:
    assert n_gpu_layers([pod("2026-01-03T00:00:00Z", None)]) is None
    assert n_gpu_layers([pod("2026-01-03T00:00:00Z", msg(5), exit_code=2)]) is None
    old = pod("2026-01-01T00:00:00Z", msg(10))
    assert n_gpu_layers([old, pod("2026-01-04T00:00:00Z", msg(99), deleting=True)]) == 10


def test_deployment_helpers() -> None:
    dep = {
        "metadata": {"namespace": "ns"},
        "spec": {
            "selector": {"matchLabels": {"b": "2", "a": "1"}},
            "template": {"spec": {"initContainers": [{"name": "fetch"}, {"name": "auto-ngl"}]}},
        },
    }
    assert has_auto_ngl(dep)
    assert pods_query(dep) == ("/api/v1/namespaces/ns/pods", [("labelSelector", "a=1,b=2")])
    dep["spec"]["template"]["spec"]["initContainers"] = [{"name": "fetch"}]
    assert not has_auto_ngl(dep)


def _status(auto_ngl: bool, reported: int | None, old: dict[str, Any]) -> dict[str, Any]:
    from modeldeploy.controller.views import DeploymentView

    dep = DeploymentView("llama.cpp", "img", 1, 1, 1, 1, 1, 1, 1, False, None)
    obs = Observation(generation=1, decision=None, deployment=dep, auto_ngl=auto_ngl, n_gpu_layers=reported)
    return compute_status(obs, old, "2026-01-01T00:00:00Z")


def test_status_reports_keeps_and_drops_the_layers() -> None:
    assert _status(True, 33, {})["nGpuLayers"] == 33
    assert _status(True, None, {"nGpuLayers": 33})["nGpuLayers"] == 33  # pods gone for a moment: kept
    assert _status(True, 12, {"nGpuLayers": 33})["nGpuLayers"] == 12  # a newer pod decided again
    assert "nGpuLayers" not in _status(False, None, {"nGpuLayers": 33})  # layers now set in the spec


def pending(
    reason: str = "Unschedulable", message: str = "0/3 nodes are available: 1 Insufficient nvidia.com/gpu."
) -> dict[str, Any]:
    cond = {"type": "PodScheduled", "status": "False", "reason": reason, "message": message}
    return {"metadata": {}, "status": {"phase": "Pending", "conditions": [cond]}}


def test_the_schedulers_sentence_is_reported() -> None:
    assert (
        unschedulable([pod("2026-01-01T00:00:00Z", None), pending()]) == pending()["status"]["conditions"][0]["message"]
    )
    assert unschedulable([pending(reason="SchedulingGated")]) is None
    assert unschedulable([{"metadata": {"deletionTimestamp": "x"}, "status": pending()["status"]}]) is None


def test_only_meaningful_pod_events_wake_the_operator() -> None:
    assert worth_a_reconcile(pending())
    assert worth_a_reconcile(pod("2026-01-01T00:00:00Z", msg(3)))
    assert not worth_a_reconcile(pod("2026-01-01T00:00:00Z", None))  # running, nothing new to say
