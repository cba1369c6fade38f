"""The shared model cache's objects as the watches show them: compact views, read by the reconcile. Pure.

Without them, every reconcile of a ModelDeployment that uses `spec.cache.shared` asked the apiserver for
the claim, the download Job and its pods (three requests, and a LIST), even when nothing had changed.
The claims, the download and listing Jobs, and their pods are watched instead (cache_handlers.py, our
label selected on the apiserver), and each is kept as the few fields model_cache.py and
modelcache/status.py read — the same shapes as the API's objects, trimmed, so the pure code does not
care where they came from. A steady reconcile of a cached ModelDeployment then makes no request.

What a view keeps: a claim's phase, class, size, owners and the download's progress annotation; a Job's
Complete/Failed conditions and the annotations saying which ModelDeployment made it; a pod's terminated
containers (exit code, termination message, end time: the download's last word) and owners; for each,
the labels that say it is ours.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modeldeploy.fetch.report import ANNOTATION
from modeldeploy.modelcache.listing import LISTING_LABEL
from modeldeploy.modelcache.plan import CACHE_LABEL, MANAGED_BY, REQUESTED_BY, REQUESTED_GENERATION

Obj = dict[str, Any]
# The labels that say an object is ours (modelcache/plan.py `not_ours`).
OWN_LABELS = (*MANAGED_BY, CACHE_LABEL, LISTING_LABEL)


def _meta(obj: Mapping[str, Any], annotations: tuple[str, ...]) -> Obj:
    meta = obj.get("metadata") or {}
    out: Obj = {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "ownerReferences") if k in meta}
    notes = {k: v for k, v in (meta.get("annotations") or {}).items() if k in annotations}
    if notes:
        out["annotations"] = notes
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k in OWN_LABELS}
    if labels:
        out["labels"] = labels
    return out


def claim_view(claim: Mapping[str, Any]) -> Obj:
    """A cache claim: owners, progress annotation, class, size, phase."""
    spec = claim.get("spec") or {}
    size = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
    return {
        "metadata": _meta(claim, (ANNOTATION,)),
        "spec": {
            **({"storageClassName": spec["storageClassName"]} if spec.get("storageClassName") else {}),
            **({"resources": {"requests": {"storage": size}}} if size else {}),
        },
        "status": {"phase": (claim.get("status") or {}).get("phase")},
    }


def job_view(job: Mapping[str, Any]) -> Obj:
    """A download or listing Job: its end (Complete/Failed) and which ModelDeployment made it."""
    conditions = [
        {"type": c.get("type"), "status": c.get("status")}
        for c in (job.get("status") or {}).get("conditions") or ()
        if c.get("type") in ("Complete", "Failed")
    ]
    return {"metadata": _meta(job, (REQUESTED_BY, REQUESTED_GENERATION)), "status": {"conditions": conditions}}


def pod_view(pod: Mapping[str, Any]) -> Obj:
    """A Job's pod: only its terminated containers (the termination message is the download's report)."""
    statuses = []
    for cs in (pod.get("status") or {}).get("containerStatuses") or ():
        term = (cs.get("state") or {}).get("terminated")
        if term:
            kept = {k: term[k] for k in ("exitCode", "message", "finishedAt") if k in term}
            statuses.append({"state": {"terminated": kept}})
    return {"metadata": _meta(pod, ()), "status": {"containerStatuses": statuses}}


def _one(index: Mapping[Any, Any] | None, key: Any) -> Obj | None:
    store = (index or {}).get(key)
    return next(iter(store), None) if store else None


@dataclass(frozen=True)
class CacheObjects:
    """The watches' views of the cache objects (Kopf indexes, keyed by (namespace, name or label value))."""

    claims: Mapping[Any, Any]
    jobs: Mapping[Any, Any]
    listing_jobs: Mapping[Any, Any]
    pods: Mapping[Any, Any]  # (namespace, label key, label value) -> the pods of one Job

    @classmethod
    def from_indexes(cls, indexes: Mapping[str, Any]) -> CacheObjects | None:
        """From a handler's kwargs; None when the cache's indexes are not there (then converge asks the API)."""
        names = ("cache_claims_index", "cache_jobs_index", "cache_listing_jobs_index", "cache_pods_index")
        if any(name not in indexes for name in names):
            return None
        return cls(*(indexes[name] for name in names))

    def claim(self, namespace: str, name: str) -> Obj | None:
        return _one(self.claims, (namespace, name))

    def job(self, namespace: str, name: str) -> Obj | None:
        return _one(self.jobs, (namespace, name))

    def listing_job(self, namespace: str, name: str) -> Obj | None:
        return _one(self.listing_jobs, (namespace, name))

    def job_pods(self, namespace: str, label: str, value: str) -> list[Obj]:
        return list((self.pods or {}).get((namespace, label, value)) or ())
