"""Every pod the operator renders meets the Pod Security "restricted" standard (docs/security.md).

One walk over every engine and feature combination (placements, caches, auto-NGL, pvc:// sources, the
shared cache's download and listing Jobs, the endpoint picker) checks each rule of the standard, baseline
rules included, for every container and init container. A pod that fails one would be refused in a
namespace labelled `pod-security.kubernetes.io/enforce: restricted`.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from render_cases import (
    CONFIG,
    LLAMACPP_CPU_SPEC,
    LLAMACPP_SPEC,
    MLX_SPEC,
    SGLANG_SPEC,
    TRANSFORMERS_SPEC,
    VLLM_SPEC,
    apple_placement,
    cpu_placement,
    decision,
    gpu_placement,
    md,
    with_spec,
)

from modeldeploy.config.scaling import GatewaySettings
from modeldeploy.modelcache import listing
from modeldeploy.modelcache import plan as cache_plan
from modeldeploy.render import render
from modeldeploy.scaling import epp

# The volume types "restricted" allows.
ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
ALLOWED_SECCOMP = {"RuntimeDefault", "Localhost"}


def restricted_problems(pod: dict[str, Any], where: str) -> list[str]:
    """Each rule of the baseline and restricted Pod Security Standards, for one pod spec."""
    problems: list[str] = []
    psc = pod.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            problems.append(f"{where}: {field}")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            problems.append(f"{where}: volume {volume['name']} of type {kinds - ALLOWED_VOLUMES}")
    if psc.get("sysctls"):
        problems.append(f"{where}: sysctls")
    if (psc.get("seLinuxOptions") or {}).get("user") or (psc.get("seLinuxOptions") or {}).get("role"):
        problems.append(f"{where}: seLinuxOptions")
    if psc.get("runAsUser") == 0:
        problems.append(f"{where}: pod runAsUser 0")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in ALLOWED_SECCOMP:
        problems.append(f"{where}: pod seccomp {pod_seccomp}")
    containers = [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]
    assert containers, where
    for c in containers:
        at = f"{where}/{c['name']}"
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            problems.append(f"{at}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{at}: allowPrivilegeEscalation not false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{at}: capabilities not dropping ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{at}: capabilities added {caps.get('add')}")
        if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            problems.append(f"{at}: runAsNonRoot not true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            problems.append(f"{at}: runAsUser 0")
        if (sc.get("seccompProfile") or {}).get("type", pod_seccomp) not in ALLOWED_SECCOMP:
            problems.append(f"{at}: seccomp not RuntimeDefault/Localhost")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{at}: procMount")
        if sc.get("windowsOptions", {}).get("hostProcess"):
            problems.append(f"{at}: hostProcess")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            problems.append(f"{at}: hostPort")
    return problems


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Every pod spec among rendered objects (Deployments, Jobs), with a name to report."""
    out = []
    for obj in objects:
        template = (obj.get("spec") or {}).get("template")
        if template:
            out.append((f"{obj['kind']}/{obj['metadata']['name']}", template["spec"]))
    return out


SPECS = {
    "vllm": (VLLM_SPEC, [lambda: gpu_placement(1), lambda: gpu_placement(2)]),
    "sglang": (SGLANG_SPEC, [lambda: gpu_placement(2)]),
    "llama.cpp": (LLAMACPP_SPEC, [lambda: gpu_placement(1), cpu_placement, apple_placement]),
    "transformers": (TRANSFORMERS_SPEC, [lambda: gpu_placement(1), cpu_placement]),
    "mlx": (MLX_SPEC, [apple_placement]),
}
CACHES: dict[str, dict[str, Any] | None] = {
    "default": None,
    "emptyDir": {"emptyDir": {"sizeLimit": "10Gi"}},
    "pvc": {"pvc": "model-cache"},
    "shared": {"shared": {}},
}
SOURCES = {"repository": None, "pvc-source": "pvc://shared-models/some/dir"}


def combinations() -> list[tuple[str, str, int, str, str]]:
    return [
        (engine, cache, i, source, ngl)
        for engine, (_, placements) in SPECS.items()
        for cache, i, source, ngl in itertools.product(CACHES, range(len(placements)), SOURCES, ("auto", "fixed"))
    ]


@pytest.mark.parametrize(("engine", "cache", "placement", "source", "ngl"), combinations())
def test_every_rendered_pod_is_restricted(engine: str, cache: str, placement: int, source: str, ngl: str) -> None:
    base, placements = SPECS[engine]
    spec = with_spec(base)
    if CACHES[cache] is None:
        spec.pop("cache", None)
    else:
        spec["cache"] = CACHES[cache]
    if SOURCES[source]:
        spec["model"]["uri"] = SOURCES[source]
    if engine == "llama.cpp":
        spec["engine"]["nGpuLayers"] = -1 if ngl == "auto" else 8
    the_md = md(spec, uid="00000000-0000-4000-8000-000000000001")
    objects = render(the_md, decision(engine, placements[placement]()), CONFIG)
    pods = pod_specs(objects)
    shared = cache_plan.plan_cache(the_md, CONFIG)
    if shared is not None:  # the shared cache's Jobs run beside the model's pods
        jobs = [cache_plan.job(shared, the_md, CONFIG, "claim-uid"), listing.listing_job(shared, the_md, CONFIG)]
        pods += pod_specs(jobs)
    assert pods
    problems = [p for where, spec_ in pods for p in restricted_problems(spec_, where)]
    assert problems == []


def test_the_llamacpp_cpu_case_with_a_pvc_source_is_restricted() -> None:
    objects = render(md(with_spec(LLAMACPP_CPU_SPEC)), decision("llama.cpp", cpu_placement()), CONFIG)
    assert [p for where, s in pod_specs(objects) for p in restricted_problems(s, where)] == []


@pytest.mark.parametrize("engine", ["vllm", "sglang", "llama.cpp"])
def test_the_endpoint_picker_is_restricted(engine: str) -> None:
    meta = {"name": "qwen", "namespace": "ml", "labels": {}, "ownerReferences": []}
    objects = epp.epp_objects(meta, engine, GatewaySettings(name="gw"))
    pods = pod_specs(objects)
    assert [where for where, _ in pods] == ["Deployment/qwen-epp"]
    assert [p for where, s in pods for p in restricted_problems(s, where)] == []


def test_the_checker_catches_a_root_pod() -> None:
    """The walk is only as good as the checker: a pod with none of the settings fails every container rule."""
    problems = restricted_problems({"containers": [{"name": "c"}], "volumes": [{"name": "h", "hostPath": {}}]}, "p")
    assert len(problems) == 5
