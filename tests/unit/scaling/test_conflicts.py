"""Two ModelDeployments serving one model name on one Gateway: the older keeps the route, the newer says so."""

from __future__ import annotations

from typing import Any

from modeldeploy.api.conditions import Condition
from modeldeploy.config import OperatorConfig
from modeldeploy.config.scaling import GatewaySettings
from modeldeploy.controller.routing import claimants, older_route
from modeldeploy.scaling.conflicts import CONFLICT, Claimant, older_claimant, served_name

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
    extra, older = older_route(bodies[1], rivals, config, ROUTED)
    assert older is not None and older.name == "old"
    (routed,) = extra
    assert routed[:3] == ("Routed", "False", CONFLICT)
    assert "'chat' is already routed on gateway inference by ModelDeployment a/old" in routed[3]
    assert older_route(bodies[0], rivals, config, ROUTED) == (ROUTED, None)


def test_no_conflict_without_a_route_or_a_gateway() -> None:
    bodies = [_md("old", "2026-01-01T00:00:00Z"), _md("new", "2026-01-02T00:00:00Z")]
    rivals = claimants(bodies, "chat")
    missing = (Condition("Routed", "False", "CRDMissing", "no HTTPRoute CRD"),)
    gateway = OperatorConfig(gateway=GatewaySettings(name="inference"))
    assert older_route(bodies[1], rivals, gateway, missing) == (missing, None)
    assert older_route(bodies[1], rivals, OperatorConfig(), ROUTED) == (ROUTED, None)


def test_a_modeldeployment_being_deleted_holds_no_name() -> None:
    going = _md("old", "2026-01-01T00:00:00Z", deletionTimestamp="2026-01-03T00:00:00Z")
    assert claimants([going, _md("new", "2026-01-02T00:00:00Z")], "chat") == (
        Claimant.of(_md("new", "2026-01-02T00:00:00Z")),
    )
    assert served_name({"spec": {}}) is None
