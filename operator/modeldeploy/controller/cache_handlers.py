"""Kopf handlers for the shared model cache's objects: a claim's progress annotation or a download Job's
end (or the end of the listing Job that sizes a claim) re-reconciles the ModelDeployments of that
namespace (docs/model-cache.md).

Separate from handlers.py so the model cache stays one removable piece. The claim and the Job carry
the `modeldeploy.io/model-cache` label; which ModelDeployments use a cache is not recorded anywhere
(it is a hash of their model fields), so every ModelDeployment of the namespace is re-evaluated —
reconciles coalesce, and a namespace holds a handful of them.

The same watches keep compact views of those objects and of the Jobs' pods in Kopf indexes
(cache_views.py), which the reconcile reads instead of asking the apiserver.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from modeldeploy.controller.cache_views import claim_view, job_view, pod_view
from modeldeploy.controller.retries import run_reconcile
from modeldeploy.modelcache.listing import LISTING_LABEL
from modeldeploy.modelcache.plan import CACHE_LABEL

CACHE = {CACHE_LABEL: kopf.PRESENT}
LISTING = {LISTING_LABEL: kopf.PRESENT}


@kopf.index("v1", "persistentvolumeclaims", labels=CACHE)
async def cache_claims_index(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): claim_view(body)}


@kopf.index("batch", "v1", "jobs", labels=CACHE)
async def cache_jobs_index(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): job_view(body)}


@kopf.index("batch", "v1", "jobs", labels=LISTING)
async def cache_listing_jobs_index(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): job_view(body)}


def _a_jobs_pod(labels: kopf.Labels, **_: Any) -> bool:
    return CACHE_LABEL in labels or LISTING_LABEL in labels


@kopf.index("v1", "pods", when=_a_jobs_pod)
async def cache_pods_index(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    """{(namespace, label, Job's label value): pod view}: a download Job's or a listing Job's pods."""
    label = CACHE_LABEL if CACHE_LABEL in labels else LISTING_LABEL
    return {(namespace, label, labels[label]): pod_view(body)}


async def _namespace_reconcile(
    namespace: str, memo: Any, indexes: dict[str, Any], logger: logging.Logger, trigger: str
) -> None:
    keys = sorted(k for k in (indexes.get("modeldeployments_index") or {}) if k[0] == namespace)
    await asyncio.gather(
        *(run_reconcile(memo, ns, name, indexes, logger, trigger=trigger, coalesce=True) for ns, name in keys)
    )


@kopf.on.event("v1", "persistentvolumeclaims", labels=CACHE, id="cache_claim_event")
@kopf.on.event("batch", "v1", "jobs", labels=CACHE, id="cache_job_event")
@kopf.on.event("batch", "v1", "jobs", labels=LISTING, id="cache_listing_job_event")
async def cache_object_event(
    type: str | None,
    namespace: str,
    memo: kopf.Memo,
    logger: logging.Logger,
    **kwargs: Any,
) -> None:
    """A claim bound or its progress annotation moved; a download Job ended (its pods' termination messages
    say how); or the listing Job that sizes a claim ended (modelcache/listing.py). Each changes what the
    namespace's ModelDeployments report, so they are reconciled again."""
    if type is None:
        return
    await _namespace_reconcile(namespace, memo, kwargs, logger, "model-cache")


@kopf.on.event("v1", "pods", when=_a_jobs_pod)
async def cache_pod_event(
    type: str | None, body: kopf.Body, namespace: str, memo: kopf.Memo, logger: logging.Logger, **kwargs: Any
) -> None:
    """A Job's pod ended: its termination message (the download's report) is read from the pod index, which
    may get it after the Job's own end, so the namespace is reconciled again then."""
    if type in (None, "DELETED") or not pod_view(body)["status"]["containerStatuses"]:
        return
    await _namespace_reconcile(namespace, memo, kwargs, logger, "model-cache")
