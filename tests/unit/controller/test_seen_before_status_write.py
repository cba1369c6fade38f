"""The Deployment view a status is computed from is remembered before that status is written: the ADDED
event of a Deployment just created arrives while the write is under way, and must find it (else every new
ModelDeployment is reconciled a second time for nothing; handlers.deployment_event)."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest

from modeldeploy.controller.kube import KubeError
from modeldeploy.controller.plan import Memory
from modeldeploy.controller.reconcile import reconcile
from modeldeploy.controller.status import shows_written
from modeldeploy.controller.views import DeploymentView
from tests.unit.controller.test_plan_report import CONFIG, KEY, body, world


class _Creating:
    """The API client: every apply creates its object (resourceVersion 5); status writes see the memory."""

    def __init__(self, memory: Memory) -> None:
        self.memory, self.created, self.seen_at_write = memory, {}, []

    async def apply(self, obj: dict[str, Any], path: str) -> dict[str, Any]:
        stored = copy.deepcopy(obj)
        stored["metadata"] |= {"resourceVersion": "5", "generation": 1, "uid": f"u-{obj['kind']}"}
        self.created[obj["kind"]] = stored
        return stored

    async def merge_patch_status(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.seen_at_write.append(self.memory.seen.get(KEY))
        return {"metadata": {"resourceVersion": "8"}, "status": patch.get("status", {})}


def test_the_deployment_view_is_remembered_before_the_status_is_written(repo_root: Path) -> None:
    memory = Memory()
    kube = _Creating(memory)
    result = asyncio.run(reconcile(kube, *KEY, world(repo_root, body(repo_root)), CONFIG, memory))  # type: ignore[arg-type]
    assert result.status_written and "Deployment" in kube.created
    added = DeploymentView.from_object(kube.created["Deployment"])  # what its ADDED event will show
    assert kube.seen_at_write == [added]


class _Echoing(_Creating):
    """Also answers each status write with what the apiserver stores, and records whether that object
    (its watch event, which may come before the answer) is known as the write's echo while it is under way."""

    def __init__(self, memory: Memory, md: dict[str, Any], fail: bool = False) -> None:
        super().__init__(memory)
        self.md, self.fail, self.echo_known = md, fail, []

    async def merge_patch_status(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        stored = copy.deepcopy(self.md)
        status = {**(stored.get("status") or {}), **patch}  # the status itself (kube.py wraps it)
        stored["status"] = {k: v for k, v in status.items() if v is not None}  # a merge patch
        stored["metadata"]["resourceVersion"] = "8"
        writing = self.memory.writing.get(KEY)
        self.echo_known.append(writing is not None and shows_written(stored, *writing))
        if self.fail:
            raise KubeError(0, "ServerTimeoutError", "no answer from the apiserver")
        return stored


def test_a_status_write_under_way_knows_its_echo_before_its_answer(repo_root: Path) -> None:
    md = body(repo_root)
    memory = Memory()
    kube = _Echoing(memory, md)
    result = asyncio.run(reconcile(kube, *KEY, world(repo_root, md), CONFIG, memory))  # type: ignore[arg-type]
    assert result.status_written and kube.echo_known == [True]
    assert memory.writing == {}  # over with the answer: from then on the version tells the echo
    failing = _Echoing(Memory(), md, fail=True)
    with pytest.raises(KubeError):
        asyncio.run(reconcile(failing, *KEY, world(repo_root, md), CONFIG, failing.memory))  # type: ignore[arg-type]
    assert failing.echo_known == [True] and failing.memory.writing == {}
