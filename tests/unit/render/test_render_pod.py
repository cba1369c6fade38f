"""Pod contents: commands, init containers, volumes, GPU limits, labels, owner references, errors."""

from __future__ import annotations

import json

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
    case,
    cpu_placement,
    decision,
    gpu_placement,
    md,
    with_spec,
)

from modeldeploy.config import EnvVar, OperatorConfig
from modeldeploy.engines.args import flag_args
from modeldeploy.engines.registry import get
from modeldeploy.model_paths import NGL_FILE
from modeldeploy.render import RenderError, render

SECRET_VALUE = "hf_supersecret"


def objects(spec: dict, engine: str, placement, uid: str | None = None) -> list[dict]:
    return render(md(spec, uid=uid), decision(engine, placement), CONFIG)


def pod(spec: dict, engine: str, placement) -> dict:
    return objects(spec, engine, placement)[0]["spec"]["template"]["spec"]


def container(spec: dict, engine: str, placement, name: str = "engine") -> dict:
    p = pod(spec, engine, placement)
    return next(c for c in [*p.get("initContainers", []), *p["containers"]] if c["name"] == name)


def init_names(spec: dict, engine: str, placement) -> list[str]:
    return [c["name"] for c in pod(spec, engine, placement).get("initContainers", [])]


def test_render_error_when_no_engine() -> None:
    with pytest.raises(RenderError, match="no engine"):
        render(md(VLLM_SPEC), decision(None, None), CONFIG)


def test_render_error_when_gpu_engine_has_no_gpus() -> None:
    with pytest.raises(RenderError, match="at least one GPU"):
        objects(VLLM_SPEC, "vllm", cpu_placement())


def test_deployment_then_service_with_stable_selector() -> None:
    dep, svc, policy = objects(VLLM_SPEC, "vllm", gpu_placement(2))
    assert (dep["kind"], svc["kind"], policy["kind"]) == ("Deployment", "Service", "NetworkPolicy")
    selector = {"app.kubernetes.io/instance": "m", "app.kubernetes.io/component": "model-server"}
    assert dep["spec"]["selector"] == {"matchLabels": selector}
    assert svc["spec"]["selector"] == selector
    assert policy["spec"]["podSelector"] == {"matchLabels": selector}
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
    assert dep["spec"]["template"]["metadata"]["labels"]["modeldeploy.io/engine"] == "vllm"
    # Switching engine keeps the selector (Deployment selectors are immutable).
    other = objects(TRANSFORMERS_SPEC, "transformers", cpu_placement())[0]
    assert other["spec"]["selector"] == dep["spec"]["selector"]


def test_pod_labels_cannot_override_ours() -> None:
    spec = with_spec(VLLM_SPEC, podLabels={"app.kubernetes.io/instance": "evil", "team": "ml"})
    labels = objects(spec, "vllm", gpu_placement(2))[0]["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/instance"] == "m" and labels["team"] == "ml"


def test_owner_reference_only_with_uid() -> None:
    dep, svc, policy = objects(VLLM_SPEC, "vllm", gpu_placement(2), uid="u-1")
    expected = [
        {
            "apiVersion": "modeldeploy.io/v1alpha1",
            "kind": "ModelDeployment",
            "name": "m",
            "uid": "u-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert dep["metadata"]["ownerReferences"] == expected == svc["metadata"]["ownerReferences"]
    assert policy["metadata"]["ownerReferences"] == expected
    for obj in objects(VLLM_SPEC, "vllm", gpu_placement(2)):
        assert "ownerReferences" not in obj["metadata"]


def test_gpu_limit_equals_placement_and_user_cannot_remove_it() -> None:
    spec = with_spec(VLLM_SPEC, resources={"gpus": 2, "limits": {"nvidia.com/gpu": 0, "memory": "8Gi"}})
    res = container(spec, "vllm", gpu_placement(2))["resources"]
    assert res["limits"] == {"memory": "8Gi", "nvidia.com/gpu": "2"}
    spec = with_spec(VLLM_SPEC, resources={"requests": {"nvidia.com/gpu": 5}})
    res = container(spec, "vllm", gpu_placement(2))["resources"]
    assert res == {"requests": {"nvidia.com/gpu": "2"}, "limits": {"nvidia.com/gpu": "2"}}


def test_transformers_gets_gpu_limit_only_when_placed_on_gpus() -> None:
    assert container(TRANSFORMERS_SPEC, "transformers", gpu_placement(1))["resources"]["limits"] == {
        "nvidia.com/gpu": "1"
    }
    cpu = container(TRANSFORMERS_SPEC, "transformers", cpu_placement())
    assert "limits" not in cpu["resources"]
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"} in cpu["env"]


def test_vllm_and_sglang_tensor_parallel_equals_gpus() -> None:
    cmd = container(VLLM_SPEC, "vllm", gpu_placement(4))["command"]
    assert cmd[cmd.index("--tensor-parallel-size") + 1] == "4"
    cmd = container(SGLANG_SPEC, "sglang", gpu_placement(2))["command"]
    assert cmd[cmd.index("--tp-size") + 1] == "2"
    assert cmd[cmd.index("--served-model-name") + 1] == "qwen2.5-instruct"


def test_bool_flag_rules() -> None:
    args = {"on_flag": True, "off-flag": False}
    assert flag_args(get("vllm"), args) == ["--no-off-flag", "--on-flag"]
    assert flag_args(get("transformers"), args) == ["--no-off-flag", "--on-flag"]
    assert flag_args(get("sglang"), args) == ["--on-flag"]
    assert flag_args(get("mlx"), args) == ["--on-flag"]


def test_flag_normalisation_and_reserved_flags() -> None:
    assert flag_args(get("vllm"), {"--max_model_len": 10, "compilation_config.cudagraph_mode": "FULL"}) == [
        "--compilation-config.cudagraph_mode",
        "FULL",
        "--max-model-len",
        "10",
    ]
    with pytest.raises(RenderError, match="--port"):
        flag_args(get("vllm"), {"port": 9000})
    with pytest.raises(RenderError, match="twice"):
        flag_args(get("vllm"), {"max_model_len": 1, "max-model-len": 2})
    with pytest.raises(RenderError, match="not a command-line flag"):
        flag_args(get("vllm"), {"bad key; rm -rf /": 1})
    with pytest.raises(RenderError, match="n_gpu_layers"):
        objects(
            with_spec(LLAMACPP_SPEC, engine={"name": "llama.cpp", "args": {"n_gpu_layers": 3}}),
            "llama.cpp",
            gpu_placement(1),
        )


def test_credentials_only_through_secret_env() -> None:
    dep = objects(VLLM_SPEC, "vllm", gpu_placement(2))[0]
    fetch = container(VLLM_SPEC, "vllm", gpu_placement(2), "fetch")
    assert "envFrom" not in fetch  # never the whole Secret: each key the fetcher reads, optional
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in fetch["env"] if "valueFrom" in e}
    assert set(refs) == {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"}  # what the fetcher reads for hf://, no more
    assert all(r == {"name": "hf-token", "key": k, "optional": True} for k, r in refs.items())
    for c in [*dep["spec"]["template"]["spec"]["initContainers"], *dep["spec"]["template"]["spec"]["containers"]]:
        assert "hf-token" not in json.dumps(c.get("command", [])) + json.dumps(c.get("args", []))
    engine = container(VLLM_SPEC, "vllm", gpu_placement(2))
    assert "envFrom" not in engine and "hf-token" not in json.dumps(engine)  # the engine never sees them


def test_operator_fetch_env_reaches_only_the_fetcher() -> None:
    """A Hub mirror set once in the operator config (Helm `config.fetchEnv`) is what the fetcher reads."""
    config = OperatorConfig(fetch_env=[EnvVar(name="HF_ENDPOINT", value="http://mirror:8080"), EnvVar(name="HOME")])
    dep = render(md(LLAMACPP_SPEC), decision("llama.cpp", gpu_placement(1)), config)[0]
    spec = dep["spec"]["template"]["spec"]
    by_name = {c["name"]: c for c in [*spec["initContainers"], *spec["containers"]]}
    assert by_name["fetch"]["env"] == [
        {"name": "HF_ENDPOINT", "value": "http://mirror:8080"},
        {"name": "HOME", "value": ""},
    ]
    assert all("HF_ENDPOINT" not in json.dumps(c.get("env", [])) for n, c in by_name.items() if n != "fetch")


def test_user_env_replaces_ours_by_name() -> None:
    spec = with_spec(VLLM_SPEC, env=[{"name": "HF_HOME", "value": "/elsewhere"}])
    env = container(spec, "vllm", gpu_placement(2))["env"]
    assert env == [{"name": "HOME", "value": "/tmp"}, {"name": "HF_HOME", "value": "/elsewhere"}]


def test_pvc_uri_mounts_claim_read_only_and_skips_fetch() -> None:
    p = pod(LLAMACPP_CPU_SPEC, "llama.cpp", cpu_placement())
    assert "initContainers" not in p
    assert {"name": "model-source", "persistentVolumeClaim": {"claimName": "shared-models", "readOnly": True}} in p[
        "volumes"
    ]
    engine = p["containers"][0]
    assert {"name": "model-source", "mountPath": "/mnt/pvc/shared-models", "readOnly": True} in engine["volumeMounts"]
    assert "/mnt/pvc/shared-models/qwen/0.5b/qwen2.5-0.5b-instruct-q8_0.gguf" in engine["command"]


def test_local_path_has_no_fetch() -> None:
    spec = with_spec(MLX_SPEC)
    spec["model"]["uri"] = "/srv/models/qwen-mlx"
    p = pod(spec, "mlx", apple_placement())
    assert "initContainers" not in p
    assert p["containers"][0]["command"][:3] == ["mlx_lm.server", "--model", "/srv/models/qwen-mlx"]


def test_fetch_gets_files_and_sha() -> None:
    spec = with_spec(LLAMACPP_SPEC)
    spec["model"]["sha256"] = "a" * 64
    cmd = container(spec, "llama.cpp", gpu_placement(1), "fetch")["command"]
    assert cmd[-6:] == [
        "--file",
        "Qwen2.5-VL-7B-Instruct-Q4_K_M.gguf",
        "--file",
        "mmproj-F16.gguf",
        "--sha256",
        "a" * 64,
    ]


def test_cache_pvc_and_empty_dir() -> None:
    p = pod(LLAMACPP_SPEC, "llama.cpp", gpu_placement(1))
    assert p["volumes"][0] == {"name": "model-cache", "persistentVolumeClaim": {"claimName": "model-cache"}}
    p = pod(with_spec(VLLM_SPEC), "vllm", gpu_placement(1))
    assert p["volumes"][0] == {"name": "model-cache", "emptyDir": {}}
    assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in p["volumes"]


def test_auto_ngl_only_for_minus_one_with_gpus() -> None:
    assert init_names(LLAMACPP_SPEC, "llama.cpp", gpu_placement(1)) == ["fetch", "auto-ngl"]
    cmd = container(LLAMACPP_SPEC, "llama.cpp", gpu_placement(1))["command"]
    assert cmd[cmd.index("--ngl-file") + 1] == NGL_FILE and "--n-gpu-layers" not in cmd

    ngl = container(LLAMACPP_SPEC, "llama.cpp", gpu_placement(2), "auto-ngl")
    assert ngl["resources"] == {"limits": {"nvidia.com/gpu": "2"}}
    assert ngl["command"][ngl["command"].index("--ctx-size") + 1] == "16384"
    assert ngl["command"][ngl["command"].index("--parallel") + 1] == "4"
    assert ngl["command"][ngl["command"].index("--cache-type-k") + 1] == "q8_0"
    assert "--cache-type-v" not in ngl["command"]  # llama.cpp keeps V at f16 unless told: so does the estimate
    assert "--flash-attn" in ngl["command"] and "--mmproj" in ngl["command"]

    # CPU placement: no init container, 0 layers, no NGL volume.
    assert init_names(LLAMACPP_SPEC, "llama.cpp", cpu_placement()) == ["fetch"]
    cmd = container(LLAMACPP_SPEC, "llama.cpp", cpu_placement())["command"]
    assert cmd[cmd.index("--n-gpu-layers") + 1] == "0"
    assert all(v["name"] != "ngl" for v in pod(LLAMACPP_SPEC, "llama.cpp", cpu_placement())["volumes"])

    # An explicit count: no init container, that count.
    fixed = with_spec(LLAMACPP_SPEC, engine={**LLAMACPP_SPEC["engine"], "nGpuLayers": 20})
    assert init_names(fixed, "llama.cpp", gpu_placement(1)) == ["fetch"]
    cmd = container(fixed, "llama.cpp", gpu_placement(1))["command"]
    assert cmd[cmd.index("--n-gpu-layers") + 1] == "20"


def test_llamacpp_params_sorted_and_formatted() -> None:
    cmd = container(LLAMACPP_SPEC, "llama.cpp", gpu_placement(1))["command"]
    params = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--param"]
    assert params == ["cache_type_k=q8_0", "flash_attn=true", "n_ctx=16384", "n_parallel=4", "sampling.top_k=40"]
    assert cmd[cmd.index("--mmproj") + 1].endswith("/mmproj-F16.gguf")


def test_projector_with_single_file_url_is_refused() -> None:
    spec = with_spec(LLAMACPP_SPEC)
    spec["model"]["uri"] = "https://example.com/models/model.gguf"
    with pytest.raises(RenderError, match="multimodalProjector"):
        objects(spec, "llama.cpp", gpu_placement(1))


def test_security_per_engine() -> None:
    """Every engine runs as uid 1000 (as images/*/Dockerfile build them); only MLX keeps a writable root."""
    vllm = container(VLLM_SPEC, "vllm", gpu_placement(2))["securityContext"]
    assert vllm["runAsNonRoot"] is True and vllm["runAsUser"] == 1000 and vllm["readOnlyRootFilesystem"] is True
    assert vllm["capabilities"] == {"drop": ["ALL"]} and vllm["seccompProfile"] == {"type": "RuntimeDefault"}
    sglang = container(SGLANG_SPEC, "sglang", gpu_placement(2))["securityContext"]
    assert sglang["runAsNonRoot"] is True and sglang["readOnlyRootFilesystem"] is True
    mlx = container(MLX_SPEC, "mlx", apple_placement())["securityContext"]
    assert mlx["runAsNonRoot"] is True and mlx["runAsUser"] == 1000 and mlx["readOnlyRootFilesystem"] is False
    llama = container(LLAMACPP_SPEC, "llama.cpp", gpu_placement(1))["securityContext"]
    assert llama["runAsNonRoot"] is True and llama["runAsUser"] == 1000 and llama["readOnlyRootFilesystem"] is True
    fetch = container(VLLM_SPEC, "vllm", gpu_placement(2), "fetch")["securityContext"]
    assert fetch["runAsNonRoot"] is True


def test_read_only_root_engines_write_home_and_caches_to_volumes() -> None:
    """A read-only root is safe only where HOME (caches) is the /tmp emptyDir and HF_HOME is the cache volume."""
    for spec, engine in ((VLLM_SPEC, "vllm"), (SGLANG_SPEC, "sglang")):
        c = container(spec, engine, gpu_placement(2))
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["HOME"] == "/tmp" and env["HF_HOME"].startswith("/models")
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]


def test_probes_on_health_endpoint() -> None:
    for spec, engine, placement in [
        (VLLM_SPEC, "vllm", gpu_placement(1)),
        (MLX_SPEC, "mlx", apple_placement()),
        (TRANSFORMERS_SPEC, "transformers", cpu_placement()),
    ]:
        c = container(spec, engine, placement)
        assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 1800
        # A request held at zero replicas waits for the first passing probe: at most a second, not a
        # 10 s period after a model that loads in 0.2 s (docs/autoscaling.md).
        assert c["startupProbe"]["periodSeconds"] == 1
        assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
        assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]


def test_transformers_command_gives_model_positionally() -> None:
    cmd = container(TRANSFORMERS_SPEC, "transformers", cpu_placement())["command"]
    assert cmd[:3] == ["transformers", "serve", "/models/s3/models/my-finetune"]
    assert "--no-continuous-batching" in cmd


def test_image_override_from_spec() -> None:
    spec = with_spec(VLLM_SPEC, images={"vllm": "registry.local/vllm:custom", "fetch": "registry.local/fetch:1"})
    assert container(spec, "vllm", gpu_placement(1))["image"] == "registry.local/vllm:custom"
    assert container(spec, "vllm", gpu_placement(1), "fetch")["image"] == "registry.local/fetch:1"


def test_service_account_passthrough() -> None:
    p = pod(VLLM_SPEC, "vllm", gpu_placement(1))
    assert p["serviceAccountName"] == "models" and "automountServiceAccountToken" not in p
    md_, d = case("sglang")
    p = render(md_, d, CONFIG)[0]["spec"]["template"]["spec"]
    assert "serviceAccountName" not in p and p["automountServiceAccountToken"] is False


def test_shared_model_cache_mounts_the_claim_read_only_and_downloads_nothing_in_the_pod() -> None:
    from modeldeploy.model_paths import locate
    from modeldeploy.modelcache.plan import SHARED_VOLUME, plan_cache

    spec = with_spec(LLAMACPP_SPEC, cache={"shared": {}})
    placement = gpu_placement(1)
    p = pod(spec, "llama.cpp", placement)
    plan = plan_cache(md(spec), CONFIG)
    assert plan is not None
    assert init_names(spec, "llama.cpp", placement) == ["auto-ngl"]
    claim = next(v for v in p["volumes"] if v["name"] == SHARED_VOLUME)
    assert claim == {"name": SHARED_VOLUME, "persistentVolumeClaim": {"claimName": plan.name, "readOnly": True}}
    where = locate(spec["model"]["uri"]).directory
    for name in ("engine", "auto-ngl"):  # both read the GGUF where they always do, now from the claim
        mount = container(spec, "llama.cpp", placement, name)["volumeMounts"]
        assert {"name": SHARED_VOLUME, "mountPath": where, "readOnly": True} in mount
    # Without cache.shared nothing changes: the per-pod fetcher stays.
    assert "fetch" in init_names(LLAMACPP_SPEC, "llama.cpp", placement)


def test_a_credentials_key_the_operator_sets_in_fetch_env_is_not_taken_from_the_secret() -> None:
    """The operator's fetchEnv (say, its own AWS_ENDPOINT_URL) wins over the Secret, as it did over envFrom,
    and the env list stays one entry per name (server-side apply refuses duplicates)."""
    config = OperatorConfig(fetch_env=[EnvVar(name="AWS_ENDPOINT_URL", value="https://s3.internal")])
    dep = render(md(TRANSFORMERS_SPEC), decision("transformers", cpu_placement()), config)[0]
    (fetch,) = [c for c in dep["spec"]["template"]["spec"]["initContainers"] if c["name"] == "fetch"]
    names = [e["name"] for e in fetch["env"]]
    assert len(names) == len(set(names))
    assert {"name": "AWS_ENDPOINT_URL", "value": "https://s3.internal"} in fetch["env"]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(names) and "HF_TOKEN" not in names
