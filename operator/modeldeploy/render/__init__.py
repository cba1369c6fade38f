"""Rendering: a ModelDeployment and a Decision in, the Deployment, Service and NetworkPolicy out. Pure,
deterministic.

Same inputs, same bytes: no timestamps, random names or hashes of the spec (a hash annotation would roll
the pods on every cosmetic change); dict keys are emitted in a fixed order and user-written structures
in sorted-key order, so `dump_yaml(render(...))` is byte-identical across runs and processes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.config import OperatorConfig
from modeldeploy.modelcache.plan import plan_cache
from modeldeploy.render.containers import RenderError
from modeldeploy.render.network import model_network_policy
from modeldeploy.render.objects import deployment, service
from modeldeploy.render.pod import pod_template
from modeldeploy.selection.types import Decision

__all__ = ["RenderError", "dump_yaml", "render"]


def render(md: ModelDeployment, decision: Decision, config: OperatorConfig) -> list[dict[str, Any]]:
    """[Deployment, Service] for a ModelDeployment whose engine has been chosen, and its NetworkPolicy
    unless the operator config switches policies off (docs/security.md, "NetworkPolicies").

    Raises RenderError (a ValueError) with a sentence fit for status when there is no engine, no
    placement, or the spec cannot be rendered for this engine (e.g. an engine.args key ModelDeploy sets).
    """
    if decision.engine is None:
        raise RenderError(f"{md.metadata.name}: no engine was selected, nothing to render: {decision.summary}")
    if decision.placement is None:
        raise RenderError(f"{md.metadata.name}: engine {decision.engine} was selected without a placement")
    engine, placement = decision.engine, decision.placement
    template = pod_template(md, engine, placement, config)
    objects = [deployment(md, engine, placement, template), service(md, engine)]
    if config.network_policies.enabled:
        objects.append(model_network_policy(md, engine, config, shared_cache=plan_cache(md, config) is not None))
    return objects


def dump_yaml(objects: Iterable[dict[str, Any]]) -> str:
    """Multi-document YAML, keys in the order rendered (never re-sorted), each document opened by `---`."""
    return str(
        yaml.safe_dump_all(list(objects), sort_keys=False, explicit_start=True, default_flow_style=False, width=120)
    )
