"""The shared model cache's part of the status, and when a failed download is tried again. Pure.

execute.py creates the cache's objects (`converge_cache`); report.py writes `status.model` from what
this module makes of the cache's state (docs/model-cache.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.modelcache import plan as p
from modeldeploy.modelcache.status import CacheState


def retry_after_edit(job: Mapping[str, Any], md: ModelDeployment) -> bool:
    """A failed download Job is made again when the ModelDeployment it was made for has been edited since.

    Only that one: two ModelDeployments that disagree (say, different credentialsSecrets) must not take
    turns re-creating the Job. Anyone can also retry by deleting the failed Job.
    """
    failed = any(
        c.get("type") == "Failed" and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or ()
    )
    notes = (job.get("metadata") or {}).get("annotations") or {}
    if not failed or notes.get(p.REQUESTED_BY) != md.metadata.name:
        return False
    try:
        return (md.metadata.generation or 0) > int(notes.get(p.REQUESTED_GENERATION, "0"))
    except ValueError:
        return False


def model_status(md: ModelDeployment, cache: CacheState | None) -> dict[str, Any]:
    """`status.model`: the normalised quantization, and the shared cache's download when there is one."""
    out: dict[str, Any] = {}
    if md.spec.model.quantization:
        out["quantization"] = md.spec.model.quantization
    if cache is not None:
        out.update(cache.model)
    return out


def fix_model_patch(old: Mapping[str, Any], patch: dict[str, Any] | None) -> dict[str, Any] | None:
    """A merge patch keeps keys it does not mention: null the `status.model` keys that went away."""
    if not patch or not isinstance(patch.get("model"), dict):
        return patch
    before = old.get("model") or {}
    patch["model"] = {**{k: None for k in before if k not in patch["model"]}, **patch["model"]}
    return patch
