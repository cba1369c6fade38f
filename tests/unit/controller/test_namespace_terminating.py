"""A ModelDeployment whose namespace is being deleted: its children go first, and re-creating them is
refused with the cause NamespaceTerminating. The reconcile then writes no status and asks for no retry."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from modeldeploy.controller.kube import KubeError
from modeldeploy.controller.plan import Memory
from modeldeploy.controller.reconcile import reconcile
from tests.unit.controller.test_plan_report import CONFIG, KEY, body, world

# What the apiserver's NamespaceLifecycle admission answers a create in a namespace being deleted.
TERMINATING = {
    "kind": "Status",
    "status": "Failure",
    "reason": "Forbidden",
    "code": 403,
    "message": 'deployments.apps "smollm2" is forbidden: unable to create new content in namespace team because it '
    "is being terminated",
    "details": {
        "name": "smollm2",
        "kind": "deployments",
        "causes": [{"reason": "NamespaceTerminating", "message": "namespace team is being terminated"}],
    },
}
QUOTA = {**TERMINATING, "message": "exceeded quota", "details": {"causes": []}}


class _Refusing:
    """The API client: refuses every apply with `answer`, records status writes."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer, self.status_writes = answer, 0

    async def apply(self, obj: dict[str, Any], path: str) -> dict[str, Any]:
        raise KubeError(403, "Forbidden", str(self.answer["message"]), self.answer)

    async def merge_patch_status(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.status_writes += 1
        return {"metadata": {"resourceVersion": "8"}, "status": patch.get("status", {})}


def _reconcile(repo_root: Path, answer: dict[str, Any]) -> tuple[Any, _Refusing]:
    kube = _Refusing(answer)
    w = world(repo_root, body(repo_root))
    result = asyncio.run(reconcile(kube, *KEY, w, CONFIG, Memory()))  # type: ignore[arg-type]
    return result, kube


def test_a_create_refused_because_the_namespace_goes_is_not_reported_or_retried(repo_root: Path) -> None:
    result, kube = _reconcile(repo_root, TERMINATING)
    assert result.outcome == "gone" and result.failed is None and not result.events
    assert kube.status_writes == 0


def test_any_other_refusal_is_still_reported_and_retried(repo_root: Path) -> None:
    result, kube = _reconcile(repo_root, QUOTA)
    assert result.outcome == "failed" and result.failed is not None
    assert kube.status_writes == 1


def test_only_the_apiservers_cause_marks_a_namespace_terminating() -> None:
    assert KubeError(403, "Forbidden", "", TERMINATING).namespace_terminating
    assert not KubeError(403, "Forbidden", str(TERMINATING["message"])).namespace_terminating  # no cause given
    assert not KubeError(409, "Conflict", "", TERMINATING).namespace_terminating
