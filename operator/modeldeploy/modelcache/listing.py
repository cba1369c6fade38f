"""Sizing a shared cache from the model's listing when `spec.cache.shared.size` is not given. Pure.

A claim's size is fixed when it is made (and many StorageClasses cannot grow one), so a claim sized by a
guess (the operator's `modelCache.size`) is either wasted or too small. When the spec gives no size, a
small listing Job runs first, before the claim exists: the fetch image with `--list-only` asks the source
for exactly the files the download Job will fetch (same revision, same `model.file`/projector, same
credentials, env and node placement) and ends with their total in its termination message. The claim is
then made with that total plus headroom (`size_from_listing`, docs/model-cache.md); the download proceeds
as when a size is given. A source that lists no sizes (a single https:// file) gets the operator's
`modelCache.size`. The Job needs no volume and no API access (no ServiceAccount token).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.config import OperatorConfig
from modeldeploy.model_paths import redact_text, redact_uri
from modeldeploy.modelcache.plan import MANAGED_BY, CachePlan, fetch_job
from modeldeploy.modelcache.status import CacheState, _job_condition, _last_message, _state, pods_of

LISTING_LABEL = "modeldeploy.io/model-cache-listing"
HEADROOM_PERCENT = 10  # for huggingface_hub's temporary files and filesystem overhead
GIB = 1024**3


def listing_name(plan: CachePlan) -> str:
    """Deterministic, from the same cache key as the claim (at most 63 characters: the claim's is <= 44)."""
    return f"{plan.name}-list"


def size_from_listing(total_bytes: int) -> str:
    """The claim size for a model of `total_bytes`: +10 % headroom, rounded up to a whole GiB (at least 1Gi)."""
    with_headroom = total_bytes * (100 + HEADROOM_PERCENT)  # in hundredths of a byte: exact, no float rounding
    return f"{max(1, -(-with_headroom // (100 * GIB)))}Gi"


def listing_job(plan: CachePlan, md: ModelDeployment, config: OperatorConfig) -> dict[str, Any]:
    """The listing Job: `python -m modeldeploy.fetch --list-only` for exactly the files the download fetches."""
    command = ["python", "-m", "modeldeploy.fetch", "--uri", plan.uri, "--dest", "/tmp/listing", "--list-only"]
    for f in plan.files:
        command += ["--file", f]
    labels = {**MANAGED_BY, LISTING_LABEL: plan.name}
    return fetch_job(listing_name(plan), labels, plan, md, config, command, [], [], token=False)


def listed_total(job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]) -> int | None:
    """The listed total bytes once the listing Job completed; 0 when the source lists no sizes."""
    if not _job_condition(job, "Complete"):
        return None
    message = _last_message(pods_of(job, pods), "succeeded") or ""
    try:
        record = json.loads(message) if message.startswith("{") else {}
    except ValueError:
        record = {}
    total = record.get("total") if isinstance(record, dict) else None
    return total if isinstance(total, int) and total > 0 else 0


def claim_size(plan: CachePlan, total: int, config: OperatorConfig) -> str:
    """The claim size from a completed listing (the operator's modelCache.size when nothing was listed)."""
    return size_from_listing(total) if total > 0 else config.model_cache.size


def listing_state(plan: CachePlan, job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]) -> CacheState:
    """`status.model` while the claim is being sized: Pending, or Failed like a failed download."""
    name = listing_name(plan)
    if _job_condition(job, "Failed"):
        message = redact_text(_last_message(pods_of(job, pods), "failed") or "the model listing Job failed")
        return _state(plan, "Failed", f"The listing of {redact_uri(plan.uri)} failed: {message}", "DownloadFailed")
    what = (
        f"the listing Job {name} is listing {redact_uri(plan.uri)}"
        if job is not None
        else f"creating the listing Job {name}"
    )
    return _state(plan, "Pending", f"sizing the model cache claim {plan.name}: {what}", "Sizing")
