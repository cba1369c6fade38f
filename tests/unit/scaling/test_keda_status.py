"""KEDA's word on our ScaledObject in the Autoscaling condition."""

from __future__ import annotations

from modeldeploy.api.conditions import Condition
from modeldeploy.scaling.keda_status import NOT_READY, with_keda_status

PLAN = (
    Condition("Autoscaling", "True", "KEDA", "KEDA scales 1..4 on requests in flight"),
    Condition("Routed", "True", "X", "y"),
)


def test_nothing_reported_leaves_the_plan_as_it_is() -> None:
    assert with_keda_status(PLAN, ()) == PLAN
    assert with_keda_status(PLAN, (("Ready", "Unknown", "", ""),)) == PLAN


def test_a_scaled_object_keda_refuses_turns_autoscaling_false_with_its_words() -> None:
    out = with_keda_status(PLAN, (("Ready", "False", "ScaledObjectCheckFailed", "no such target"),))
    assert out[0] == (
        "Autoscaling",
        "False",
        NOT_READY,
        "KEDA reports the ScaledObject not ready (ScaledObjectCheckFailed: no such target)",
    )
    assert out[1] == PLAN[1]


def test_ready_says_whether_the_triggers_are_active() -> None:
    active = with_keda_status(PLAN, (("Ready", "True", "", ""), ("Active", "True", "", "")))
    idle = with_keda_status(PLAN, (("Ready", "True", "", ""), ("Active", "False", "", "")))
    assert active[0][:3] == idle[0][:3] == PLAN[0][:3]
    assert active[0][3].endswith("Ready, active: its triggers ask for more than the minimum")
    assert idle[0][3].endswith("Ready, not active: running the minimum")


def test_an_hpa_fallback_is_not_touched() -> None:
    hpa = (Condition("Autoscaling", "True", "HPAFallback", "no KEDA"),)
    assert with_keda_status(hpa, (("Ready", "False", "x", "y"),)) == hpa
