"""The Argo CD health check in docs/gitops.md, run as written under Lua 5.1 (Argo CD's gopher-lua dialect)."""

from __future__ import annotations

import re
import textwrap
from typing import Any

from tests.support.chart import REPO
from tests.support.tools import unavailable

KEY = "resource.customizations.health.modeldeploy.io_ModelDeployment: |"


def _snippet() -> str:
    doc = (REPO / "docs" / "gitops.md").read_text()
    match = re.search(re.escape(KEY) + r"\n(.*?)\n```", doc, re.S)
    assert match, f"{KEY} block not found in docs/gitops.md"
    return textwrap.dedent(match.group(1))


def _health(obj: dict[str, Any]) -> dict[str, str]:
    try:
        from lupa import lua51
    except ImportError:  # the `test` extra brings lupa; without it: fail in CI, skip elsewhere
        unavailable("lupa (Lua 5.1 for Python) is not installed: pip install -e '.[test]'")
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    check = lua.execute("return function() " + _snippet() + " end")
    hs = check()
    return {"status": hs["status"], "message": hs["message"]}


def _cond(kind: str, status: str, reason: str, message: str = "", generation: int = 2) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": "2025-01-01T00:00:00Z",
    }


def _md(conditions: list[dict[str, Any]] | None, observed: int | None = 2, generation: int = 2) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "qwen", "generation": generation}}
    if conditions is not None:
        obj["status"] = {"observedGeneration": observed, "conditions": conditions}
    return obj


READY = _cond("Ready", "True", "ReplicasReady", "1/1 replicas ready")
SELECTED = _cond("EngineSelected", "True", "EngineChosen", "vllm: 2 nodes")
NOT_DEGRADED = _cond("Degraded", "False", "AsExpected")
DONE = _cond("Progressing", "False", "RolloutComplete")


def test_new_object_is_progressing() -> None:
    assert _health(_md(None))["status"] == "Progressing"


def test_ready_for_the_current_generation_is_healthy() -> None:
    health = _health(_md([SELECTED, READY, DONE, NOT_DEGRADED]))
    assert health == {"status": "Healthy", "message": "ReplicasReady: 1/1 replicas ready"}


def test_a_spec_not_yet_observed_is_progressing_even_if_ready() -> None:
    assert _health(_md([SELECTED, READY, DONE, NOT_DEGRADED], observed=1, generation=2))["status"] == "Progressing"


def test_conditions_about_an_older_generation_do_not_count() -> None:
    stale_ready = _cond("Ready", "True", "ReplicasReady", generation=1)
    assert _health(_md([SELECTED, stale_ready]))["status"] == "Progressing"


def test_rolling_out_is_progressing() -> None:
    conditions = [
        SELECTED,
        _cond("Ready", "False", "RollingOut", "0/1 replicas ready"),
        _cond("Progressing", "True", "RollingOut"),
        NOT_DEGRADED,
        _cond("Reconciling", "True", "RollingOut"),
    ]
    assert _health(_md(conditions)) == {"status": "Progressing", "message": "RollingOut: 0/1 replicas ready"}


def test_no_engine_is_degraded_with_the_reason() -> None:
    why = "no engine can run: vllm needs a CUDA GPU node"
    conditions = [
        _cond("EngineSelected", "False", "NoEligibleEngine", why),
        _cond("Ready", "False", "NoEligibleEngine", "no Deployment runs this model"),
        NOT_DEGRADED,
        _cond("Stalled", "True", "NoEligibleEngine", why),
    ]
    assert _health(_md(conditions)) == {"status": "Degraded", "message": f"NoEligibleEngine: {why}"}


def test_degraded_while_serving_is_degraded() -> None:
    risk = _cond("Degraded", "True", "LlamaCppConfigRisk", "per-slot context 512 is below the model's needs")
    assert _health(_md([SELECTED, READY, DONE, risk]))["status"] == "Degraded"
