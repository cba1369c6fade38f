"""Two ModelDeployments serving one model name on one Gateway: the older keeps the route, the newer says so;
and which namespaces may route which names is the operator's config (docs/security.md, "Gateway model names")."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from modeldeploy.api.conditions import Condition
from modeldeploy.config import OperatorConfig
from modeldeploy.config.scaling import GatewaySettings, ModelNameGrant
from modeldeploy.controller.routing import claimants, refused_route
from modeldeploy.scaling.conflicts import CONFLICT, NOT_ALLOWED, Claimant, older_claimant, served_name

ROUTED = (Condition("Routed", "True", "InferencePool", "requests naming this model reach its pool"),)


def _md(name: str, created: str, served: str = "chat", namespace: str = "a", **meta: Any) -> dict[str, Any]:
    metadata = {"name": name, "namespace": namespace, "uid": f"uid-{namespace}-{name}", "creationTimestamp": created}
    return {"metadata": {**metadata, **meta}, "spec": {"model": {"name": served}}}


def test_the_older_holds_the_name_and_the_newer_yields() -> None:
    old, new = Claimant.of(_md("old", "2026-01-01T00:00:00Z")), Claimant.of(_md("new", "2026-01-02T00:00:00Z"))
    assert older_claimant(new, [old, new], shared_gateway=False) == old
    assert older_claimant(old, [old, new], shared_gateway=False) is None
    assert older_claimant(old, [old], shared_gateway=False) is None


def test_created_in_the_same_second_the_order_is_namespace_then_name() -> None:
    a, b = Claimant.of(_md("a", "2026-01-01T00:00:00Z")), Claimant.of(_md("b", "2026-01-01T00:00:00Z"))
    assert older_claimant(b, [b, a], shared_gateway=False) == a and older_claimant(a, [a, b], False) is None


def test_other_namespaces_collide_only_on_a_shared_gateway() -> None:
    here = Claimant.of(_md("m", "2026-01-02T00:00:00Z", namespace="a"))
    there = Claimant.of(_md("m", "2026-01-01T00:00:00Z", namespace="b"))
    assert older_claimant(here, [here, there], shared_gateway=False) is None  # each namespace's own Gateway
    assert older_claimant(here, [here, there], shared_gateway=True) == there


def test_the_newer_reports_model_name_conflict_naming_the_older() -> None:
    config = OperatorConfig(gateway=GatewaySettings(name="inference"))
    bodies = [_md("old", "2026-01-01T00:00:00Z"), _md("new", "2026-01-02T00:00:00Z"), _md("x", "2025", served="o")]
    rivals = claimants(bodies, "chat")
    assert [c.name for c in rivals] == ["old", "new"]
    extra, refused = refused_route(bodies[1], rivals, config, ROUTED)
    assert refused
    (routed,) = extra
    assert routed[:3] == ("Routed", "False", CONFLICT)
    assert "'chat' is already routed on gateway inference by ModelDeployment old, created earlier" in routed[3]
    assert refused_route(bodies[0], rivals, config, ROUTED) == (ROUTED, False)


def test_no_conflict_without_a_route_or_a_gateway() -> None:
    bodies = [_md("old", "2026-01-01T00:00:00Z"), _md("new", "2026-01-02T00:00:00Z")]
    rivals = claimants(bodies, "chat")
    missing = (Condition("Routed", "False", "CRDMissing", "no HTTPRoute CRD"),)
    gateway = OperatorConfig(gateway=GatewaySettings(name="inference"))
    assert refused_route(bodies[1], rivals, gateway, missing) == (missing, False)
    assert refused_route(bodies[1], rivals, OperatorConfig(), ROUTED) == (ROUTED, False)


def test_a_modeldeployment_being_deleted_holds_no_name() -> None:
    going = _md("old", "2026-01-01T00:00:00Z", deletionTimestamp="2026-01-03T00:00:00Z")
    assert claimants([going, _md("new", "2026-01-02T00:00:00Z")], "chat") == (
        Claimant.of(_md("new", "2026-01-02T00:00:00Z")),
    )
    assert served_name({"spec": {}}) is None


SHARED = GatewaySettings(name="inference", namespace="gateways")


def test_a_conflict_with_another_namespace_names_neither_its_namespace_nor_its_object() -> None:
    config = OperatorConfig(gateway=SHARED)
    theirs = _md("secret-project", "2026-01-01T00:00:00Z", namespace="tenant-b")
    mine = _md("mine", "2026-01-02T00:00:00Z", namespace="tenant-a")
    extra, refused = refused_route(mine, claimants([theirs, mine], "chat"), config, ROUTED)
    (routed,) = extra
    assert refused and routed[:3] == ("Routed", "False", CONFLICT)
    assert "tenant-b" not in routed[3] and "secret-project" not in routed[3]
    assert "'chat' is already routed on gateway inference by a ModelDeployment, created earlier" in routed[3]


def _grants(*grants: tuple[list[str], list[str]]) -> OperatorConfig:
    model_names = [ModelNameGrant(namespaces=ns, names=names) for ns, names in grants]
    return OperatorConfig(gateway=SHARED.model_copy(update={"model_names": model_names}))


def test_a_namespace_not_granted_the_name_gets_no_route_and_is_told_why() -> None:
    config = _grants((["team-a"], ["llama-*", "chat"]), (["team-b-*"], ["qwen*"]))
    body = _md("m", "2026-01-01T00:00:00Z", served="qwen2.5", namespace="team-a")
    extra, refused = refused_route(body, claimants([body], "qwen2.5"), config, ROUTED)
    (routed,) = extra
    assert refused and routed[:3] == ("Routed", "False", NOT_ALLOWED)
    assert "namespace team-a may not route the model name 'qwen2.5' on gateway inference" in routed[3]
    assert "gateway.modelNames" in routed[3]
    for namespace, served in (("team-a", "llama-3"), ("team-a", "chat"), ("team-b-prod", "qwen2.5")):
        granted = _md("m", "2026-01-01T00:00:00Z", served=served, namespace=namespace)
        assert refused_route(granted, claimants([granted], served), config, ROUTED) == (ROUTED, False)


def test_an_older_modeldeployment_not_granted_the_name_does_not_hold_it() -> None:
    """Otherwise any tenant could squat a name on the shared Gateway before the team it is granted to."""
    config = _grants((["team-a"], ["chat"]))
    squatter = _md("early", "2026-01-01T00:00:00Z", namespace="team-x")
    owner = _md("late", "2026-01-02T00:00:00Z", namespace="team-a")
    rivals = claimants([squatter, owner], "chat")
    assert refused_route(owner, rivals, config, ROUTED) == (ROUTED, False)
    extra, refused = refused_route(squatter, rivals, config, ROUTED)
    assert refused and extra[0].reason == NOT_ALLOWED
    # Without grants, the same pair is first come, first served.
    extra, refused = refused_route(owner, rivals, OperatorConfig(gateway=SHARED), ROUTED)
    assert refused and extra[0].reason == CONFLICT


def test_grants_are_validated_in_the_config() -> None:
    with pytest.raises(ValidationError, match="namespaces"):
        OperatorConfig.model_validate({"gateway": {"modelNames": [{"namespaces": [], "names": ["x"]}]}})
    loaded = OperatorConfig.model_validate({"gateway": {"modelNames": [{"namespaces": ["a"], "names": ["x*"]}]}})
    assert loaded.gateway.may_route("a", "x1") and not loaded.gateway.may_route("b", "x1")
