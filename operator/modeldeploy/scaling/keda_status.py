"""What KEDA says about our ScaledObject, folded into the `Autoscaling` condition. Pure.

The plan (plan.py) can only say what was rendered (`Autoscaling=True`, reason `KEDA`); whether KEDA took
the ScaledObject is in its status: `Ready=False` when KEDA refuses it (a trigger it cannot reach, a
malformed query, a target it cannot scale), `Active` whether the triggers currently ask for replicas
above the minimum. A ScaledObject KEDA has not looked at yet (no conditions; or KEDA not running at all)
leaves the plan's condition as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

from modeldeploy.api.conditions import Condition

KEDA_REASON = "KEDA"
NOT_READY = "ScaledObjectNotReady"


def with_keda_status(extra: Sequence[Condition], reported: Sequence[Condition]) -> tuple[Condition, ...]:
    """`extra` (the plan's conditions) with the Autoscaling condition told what KEDA reports."""
    found = {kind: (status, reason, message) for kind, status, reason, message in reported}
    ready, active = found.get("Ready"), found.get("Active")
    out: list[Condition] = []
    for condition in extra:
        kind, status, reason, message = condition
        if kind != "Autoscaling" or reason != KEDA_REASON or ready is None or ready[0] == "Unknown":
            out.append(condition)
        elif ready[0] == "False":
            why = ": ".join(part for part in (ready[1], ready[2]) if part) or "no reason given"
            out.append(Condition(kind, "False", NOT_READY, f"KEDA reports the ScaledObject not ready ({why})"))
        else:
            state = (
                "active: its triggers ask for more than the minimum"
                if active and active[0] == "True"
                else ("not active: running the minimum")
            )
            out.append(Condition(kind, status, reason, f"{message}; KEDA has the ScaledObject Ready, {state}"))
    return tuple(out)
