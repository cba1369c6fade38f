"""Golden files: one rendered ModelDeployment per engine, compared byte for byte.

Regenerate on purpose only: `MODELDEPLOY_UPDATE_GOLDEN=1 pytest tests/unit/render`, then review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from render_cases import CONFIG, GOLDEN_CASES, case

from modeldeploy.render import dump_yaml, render

GOLDEN_DIR = Path(__file__).resolve().parents[2] / "golden"
UPDATE = os.environ.get("MODELDEPLOY_UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_golden(name: str) -> None:
    md, decision = case(name)
    text = dump_yaml(render(md, decision, CONFIG))
    path = GOLDEN_DIR / f"{name}.yaml"
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"{path} is missing; run with MODELDEPLOY_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), f"{path.name} differs; if intended, regenerate with MODELDEPLOY_UPDATE_GOLDEN=1"


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_render_is_byte_identical_across_calls(name: str) -> None:
    md1, d1 = case(name)
    md2, d2 = case(name)
    assert dump_yaml(render(md1, d1, CONFIG)) == dump_yaml(render(md2, d2, CONFIG))


def test_render_does_not_depend_on_user_key_order() -> None:
    """The same affinity/tolerations written with keys in another order give the same bytes."""
    from render_cases import LLAMACPP_CPU_SPEC, cpu_placement, decision, md, with_spec

    def reverse(value):
        if isinstance(value, dict):
            return {k: reverse(value[k]) for k in reversed(list(value))}
        if isinstance(value, list):
            return [reverse(v) for v in value]
        return value

    spec = with_spec(LLAMACPP_CPU_SPEC, tolerations=[{"key": "a", "operator": "Exists", "effect": "NoSchedule"}])
    shuffled = with_spec(spec, affinity=reverse(spec["affinity"]), tolerations=reverse(spec["tolerations"]))
    d = decision("llama.cpp", cpu_placement())
    assert dump_yaml(render(md(spec), d, CONFIG)) == dump_yaml(render(md(shuffled), d, CONFIG))


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_every_rendered_field_is_a_kubernetes_field(name: str) -> None:
    """Round-trip through the kubernetes client's models: a misspelt or misplaced key would be dropped."""
    import json

    from kubernetes.client import ApiClient

    api = ApiClient()
    md, decision = case(name)
    for obj in render(md, decision, CONFIG):
        kind = {"Deployment": "V1Deployment", "Service": "V1Service", "NetworkPolicy": "V1NetworkPolicy"}[obj["kind"]]
        text = json.dumps(obj)
        try:
            model = api.deserialize(text, kind, "application/json")
        except TypeError:  # older clients take a response object instead

            class _Response:
                data = text

            model = api.deserialize(_Response(), kind)
        back = json.loads(json.dumps(api.sanitize_for_serialization(model), sort_keys=True))
        assert back == json.loads(json.dumps(obj, sort_keys=True))
