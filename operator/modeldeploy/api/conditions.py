"""One status condition as the operator's parts hand it to each other, before it is written.

A named tuple rather than the 4-tuple it replaces: the stages that produce conditions (autoscaling,
routing, the model cache, the reconcile) and the one that writes them (controller/status.py) read
`.type` and `.reason`, not positions. `api.v1alpha1.Condition` is the written form, with its transition
time and generation.
"""

from __future__ import annotations

from typing import NamedTuple


class Condition(NamedTuple):
    """A condition's type, status ("True", "False", "Unknown"), reason (CamelCase) and message."""

    type: str
    status: str
    reason: str
    message: str
