"""What a shared model cache's objects say, as `status.model` and the `ModelReady` condition. Pure.

The inputs are what the operator can read without writing anything: the claim (its phase, and the
progress annotation the download Job merges into it), whether its StorageClass exists, the Job's
status and its pods' termination messages. Every failure is one sentence that says what to fix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modeldeploy.api.conditions import Condition
from modeldeploy.fetch.report import ANNOTATION
from modeldeploy.model_paths import redact_text, redact_uri
from modeldeploy.modelcache.plan import CachePlan

MODEL_READY = "ModelReady"
FOREIGN_OBJECT = "ForeignObject"


@dataclass(frozen=True)
class StorageFacts:
    """The claim's StorageClass: does it exist (None: unknown, e.g. not allowed to read), is there a default."""

    class_exists: bool | None = None
    default_exists: bool | None = None


@dataclass(frozen=True)
class CacheState:
    """`status.model` (without quantization) and the ModelReady condition (status, reason, message)."""

    model: dict[str, Any]
    condition: Condition

    @property
    def ready(self) -> bool:
        return self.model.get("phase") == "Ready"


def _annotation(claim: Mapping[str, Any] | None) -> dict[str, Any]:
    raw = (((claim or {}).get("metadata") or {}).get("annotations") or {}).get(ANNOTATION)
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _job_condition(job: Mapping[str, Any] | None, kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True"
        for c in ((job or {}).get("status") or {}).get("conditions") or ()
    )


def _last_message(pods: Sequence[Mapping[str, Any]], reason: str) -> str | None:
    """The newest termination message of the Job's pods whose fetch container ended `reason` way."""
    best: tuple[str, str] | None = None
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or ():
            term = (cs.get("state") or {}).get("terminated") or {}
            ok = term.get("exitCode") == 0
            if term and ok == (reason == "succeeded") and term.get("message"):
                stamp = str(term.get("finishedAt") or "")
                if best is None or stamp >= best[0]:
                    best = (stamp, str(term["message"]).strip())
    return best[1] if best else None


def _percent(done: int | None, total: int | None) -> str:
    if done is None or not total:
        return "Downloading"
    return f"Downloading {min(100, int(100 * done / total))}%"


def _state(plan: CachePlan, phase: str, message: str, reason: str, **fields: Any) -> CacheState:
    model: dict[str, Any] = {"phase": phase, "claim": plan.name, "message": message}
    model.update({k: v for k, v in fields.items() if v is not None})
    model["summary"] = _percent(model.get("bytesDone"), model.get("bytesTotal")) if phase == "Downloading" else phase
    status = "True" if phase == "Ready" else "False"
    return CacheState(model, Condition(MODEL_READY, status, reason, message))


def foreign_state(plan: CachePlan, message: str) -> CacheState:
    """An object with one of the cache's names is not ours (plan.not_ours): nothing was done."""
    return _state(plan, "Failed", message, FOREIGN_OBJECT)


def pods_of(job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The pods the Job itself made (its uid among their owners): a pod anyone made with the cache's label
    and a termination message of its choosing says nothing about the download."""
    uid = ((job or {}).get("metadata") or {}).get("uid")
    if not uid:
        return []
    return [
        pod
        for pod in pods
        if any(r.get("uid") == uid for r in (pod.get("metadata") or {}).get("ownerReferences") or ())
    ]


def cache_state(
    plan: CachePlan,
    claim: Mapping[str, Any] | None,
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    storage: StorageFacts,
) -> CacheState:
    """The cache's phase from its objects (see the module docstring)."""
    if claim is None:
        return _state(plan, "Pending", f"creating the model cache claim {plan.name}", "Pending")
    note = _annotation(claim)
    numbers = {"bytesDone": note.get("bytes"), "bytesTotal": note.get("total"), "revision": note.get("revision")}
    claim_phase = (claim.get("status") or {}).get("phase")
    sc = (claim.get("spec") or {}).get("storageClassName")  # the claim's own (admission may have defaulted it)
    if claim_phase != "Bound":
        if sc and storage.class_exists is False:
            return _state(
                plan,
                "Failed",
                f"StorageClass {sc} does not exist, so the model cache claim {plan.name} stays Pending "
                "(set spec.cache.shared.storageClassName or the operator's modelCache.storageClassName to an "
                "existing class).",
                "NoStorageClass",
            )
        if not sc and storage.default_exists is False:
            return _state(
                plan,
                "Failed",
                f"The model cache claim {plan.name} names no StorageClass and the cluster has no default one "
                "(set spec.cache.shared.storageClassName or modelCache.storageClassName).",
                "NoStorageClass",
            )
        return _state(
            plan,
            "Pending",
            f"PersistentVolumeClaim {plan.name} is {claim_phase or 'Pending'}: waiting for "
            f"{'StorageClass ' + sc if sc else 'the default StorageClass'} to provision a volume.",
            "ClaimPending",
        )
    pods = pods_of(job, pods)
    # Done only when the operator-owned Job says so: the claim's annotation is written from inside the
    # Job's pod (its progress), and a pod's word is not enough to load the weights.
    if _job_condition(job, "Complete"):
        done = _last_message(pods, "succeeded")
        final: dict[str, Any] = {}
        if done and done.startswith("{"):
            try:
                final = json.loads(done)
            except ValueError:
                final = {}
        revision = note.get("revision") or final.get("revision")
        total = note.get("total") or final.get("total")
        size = note.get("bytes") or final.get("bytes") or total
        at = f" at {revision[:12]}" if revision else ""
        return _state(
            plan,
            "Ready",
            f"the weights are on the shared cache {plan.name}{at}",
            "Downloaded",
            bytesDone=size,
            bytesTotal=total or size,
            revision=revision,
        )
    # A failure may be said early by the pod (before the Job's retries run out): it only holds the
    # Deployment back, which the Job's own Failed would do too.
    if _job_condition(job, "Failed") or note.get("phase") == "Failed":
        message = note.get("message") if note.get("phase") == "Failed" else None
        message = redact_text(message or _last_message(pods, "failed") or "the model download Job failed")
        return _state(
            plan, "Failed", f"The download of {redact_uri(plan.uri)} failed: {message}", "DownloadFailed", **numbers
        )
    if job is None:
        return _state(plan, "Pending", f"creating the download Job {plan.name}", "Pending", **numbers)
    return _state(
        plan,
        "Downloading",
        f"the download Job {plan.name} is fetching {redact_uri(plan.uri)}",
        "Downloading",
        **numbers,
    )
