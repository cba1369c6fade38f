"""The autoscaling / routing plan: every fallback, and the sentence status shows for it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from modeldeploy.api.autoscaling import AutoscalingSpec
from modeldeploy.config.scaling import AutoscalingSettings, GatewaySettings, HttpAddonSettings
from modeldeploy.scaling.plan import HTTP_ROUTE, HTTP_SCALED_OBJECT, INFERENCE_POOL, SCALED_OBJECT, plan_scaling

KEDA = frozenset({SCALED_OBJECT})
EVERYTHING = frozenset({SCALED_OBJECT, HTTP_SCALED_OBJECT, HTTP_ROUTE, INFERENCE_POOL})
ADDON = AutoscalingSettings(http_addon=HttpAddonSettings(enabled=True))


DEFAULT = AutoscalingSettings()
NO_GATEWAY = GatewaySettings()


def _plan(spec, settings=DEFAULT, crds=KEDA, gateway=NO_GATEWAY, signal=True):
    return plan_scaling(spec, signal, "vllm", settings, gateway, crds)


def test_no_autoscaling_no_gateway_renders_nothing_and_says_nothing() -> None:
    plan = _plan(None)
    assert plan.autoscaler == "none" and not plan.route and plan.notes == [] and not plan.owns_replicas


def test_keda_when_its_crd_is_served() -> None:
    plan = _plan(AutoscalingSpec(min_replicas=2, max_replicas=6, target_requests=8))
    assert (plan.autoscaler, plan.min_replicas, plan.max_replicas, plan.initial_replicas) == ("keda", 2, 6, 2)
    assert plan.owns_replicas
    (note,) = plan.notes
    assert (note.type, note.status, note.reason) == ("Autoscaling", "True", "KEDA")
    assert "2..6 replicas at 8 requests in flight" in note.message


def test_hpa_fallback_without_keda_says_why() -> None:
    plan = _plan(AutoscalingSpec(max_replicas=3), crds=frozenset())
    assert plan.autoscaler == "hpa"
    assert plan.notes[0].reason == "HPAFallback" and SCALED_OBJECT in plan.notes[0].message
    switched_off = _plan(AutoscalingSpec(max_replicas=3), settings=AutoscalingSettings(keda=False))
    assert switched_off.autoscaler == "hpa" and "switched off" in switched_off.notes[0].message


@pytest.mark.parametrize(
    ("settings", "crds", "why"),
    [
        (AutoscalingSettings(), frozenset(), "an HPA cannot scale to zero"),
        (AutoscalingSettings(), KEDA, "no component holds requests"),
        (ADDON, KEDA, f"the KEDA HTTP add-on is enabled but the CRD {HTTP_SCALED_OBJECT} is absent"),
    ],
)
def test_zero_is_raised_to_one_unless_something_holds_requests(settings, crds, why) -> None:
    plan = _plan(AutoscalingSpec(min_replicas=0, max_replicas=2), settings=settings, crds=crds)
    assert plan.min_replicas == 1 and not plan.scale_from_zero
    assert "minReplicas 0 was raised to 1 because " + why in plan.notes[0].message


def test_zero_with_the_http_addon() -> None:
    plan = _plan(AutoscalingSpec(min_replicas=0, max_replicas=2), settings=ADDON, crds=EVERYTHING)
    assert plan.min_replicas == 0 and plan.scale_from_zero and plan.initial_replicas == 1
    assert "from zero through the KEDA HTTP add-on" in plan.notes[0].message


def test_engine_without_a_load_signal_keeps_a_fixed_count() -> None:
    plan = _plan(AutoscalingSpec(min_replicas=0, max_replicas=4), signal=False)
    assert plan.autoscaler == "fixed" and plan.initial_replicas == 1 and not plan.owns_replicas
    assert plan.notes[0].status == "False" and plan.notes[0].reason == "NoLoadSignal"


def test_gateway_routes_only_when_both_crds_exist() -> None:
    gw = GatewaySettings(name="inference", namespace="gw")
    routed = _plan(None, gateway=gw, crds=EVERYTHING)
    assert routed.route and routed.notes[0].reason == "InferencePool" and "gw/inference" in routed.notes[0].message
    missing = _plan(None, gateway=gw, crds=frozenset({HTTP_ROUTE}))
    assert not missing.route
    assert missing.notes[0].reason == "CRDMissing" and INFERENCE_POOL in missing.notes[0].message


def test_spec_rejects_min_above_max_and_negative_min() -> None:
    with pytest.raises(ValidationError, match="minReplicas 3 must not exceed autoscaling.maxReplicas 2"):
        AutoscalingSpec(min_replicas=3, max_replicas=2)
    with pytest.raises(ValidationError):
        AutoscalingSpec.model_validate({"minReplicas": -1, "maxReplicas": 2})
    with pytest.raises(ValidationError):
        AutoscalingSpec.model_validate({"minReplicas": 0})  # maxReplicas is required
