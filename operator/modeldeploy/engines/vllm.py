"""vLLM: Xinference's first choice for plain and GPTQ/AWQ/FP8 weights on CUDA GPUs.

Model rules are the seed's list, one check per bullet (format, quantization, the supported-model list,
a GPU per replica); the node-side bullet ("Linux with at least one CUDA device") is its node needs.
Our image (images/vllm) is upstream vllm/vllm-openai run as uid 1000 with every cache (torch.compile,
Triton, FlashInfer JIT, HF) under $HOME or /tmp; the renderer points HOME at the /tmp emptyDir and HF_HOME
at the cache volume, so the pod meets Pod Security "restricted" with a read-only root filesystem
(docs/security.md, "Restricted pods"). /metrics is on the API port; its
load gauges are those the Gateway API Inference Extension's model-server protocol lists.
"""

from __future__ import annotations

from collections.abc import Sequence

from modeldeploy.engines.args import FlagEngine, flag_args
from modeldeploy.engines.base import HOST, PORT, Launch, Metrics, ModelView, NodeNeed, RuleResult
from modeldeploy.engines.rules import format_rule, gpu_required_needs, gpu_required_rule, quantization_rule
from modeldeploy.engines.vllm_models import is_vllm_supported
from modeldeploy.formats import ModelFormat
from modeldeploy.memory.estimate import EngineMemory

# vLLM's memory budget and kernels (docs/memory-placement.md cites each figure): gpu-memory-utilization
# defaults to 0.9 (vllm/config CacheConfig); weights, the profiled activation peak and non-torch memory
# come out of it before the KV cache. bfloat16 needs compute capability 8.0; FP8 runs W8A8 from 8.9 and
# weight-only through Marlin from 8.0; AWQ from 7.5 (awq_marlin from 8.0); GPTQ from 6.0; FP4 (NVFP4)
# from 10.0.
MEMORY = EngineMemory(
    label="vLLM",
    fraction_arg="gpu-memory-utilization",
    fraction_by_tp=((1, 0.9),),
    context_arg="max-model-len",
    profiles_activation=True,
    min_capability={"bf16": (8, 0), "fp8": (8, 0), "awq": (7, 5), "gptq": (6, 0), "fp4": (10, 0)},
)

# vLLM's quantization conditions from the seed (compared case-insensitively); formats absent here have none.
QUANTIZATION: dict[ModelFormat, tuple[str, ...]] = {
    ModelFormat.PYTORCH: ("none",),
    ModelFormat.AWQ: ("Int4",),
    ModelFormat.GPTQ: ("Int3", "Int4", "Int8"),
}


def supported_rule(model: ModelView) -> RuleResult:
    """The family (custom model) or name (builtin) is in vLLM's supported list or the config's extras."""
    what = f"model family {model.family}" if model.family else f"model {model.name}"
    key = model.family or model.name
    if is_vllm_supported(key):
        return RuleResult(True, f"{what} is in vLLM's supported list")
    if is_vllm_supported(key, model.extra_families):
        return RuleResult(True, f"{what} is in vLLM's supported list (vllmExtraFamilies in the operator config)")
    hint = "" if model.family else "; for a custom model set model.family"
    return RuleResult(
        False,
        f"{what} is not in vLLM's supported list (add it to vllmExtraFamilies in the operator config "
        f"if vLLM loads it{hint})",
    )


class VLLM(FlagEngine):
    name = "vllm"
    label = "vLLM"
    image_key = "vllm"
    formats = frozenset(
        {ModelFormat.PYTORCH, ModelFormat.GPTQ, ModelFormat.AWQ, ModelFormat.FP4, ModelFormat.FP8, ModelFormat.BNB}
    )
    auto_rank = 0
    gpu_required = True
    metrics = Metrics(port=PORT, load=("vllm:num_requests_running", "vllm:num_requests_waiting"))
    runs_as_non_root = True
    read_only_root = True
    needs_shm = True
    uses_hf_home = True
    reserved_args = frozenset({"model", "host", "port", "tensor-parallel-size", "served-model-name"})
    bool_style = "negatable"  # argparse.BooleanOptionalAction
    # Lets a model repository run its own code in the server (docs/security.md, "Engine arguments").
    trust_remote_code_arg = "trust-remote-code"
    # vLLM's own variable: its middleware then asks for the key on /v1 routes only, so /health (the
    # probes) and /metrics (the picker, the autoscaler) stay open (docs/security.md, "API keys").
    api_key_env = "VLLM_API_KEY"
    memory = MEMORY
    refused_args = {
        "allowed-local-media-path": "lets requests read files of the pod's filesystem as media",
        "api-key": "puts the key in the Deployment's command line, readable by everyone who can read it; "
        "set spec.auth instead",
        "ssl-keyfile": "opens a key file of the pod's filesystem",
        "ssl-certfile": "opens a certificate file of the pod's filesystem",
        "ssl-ca-certs": "opens a certificate file of the pod's filesystem",
        "tool-parser-plugin": "imports a Python file of the pod's filesystem into the server",
        "middleware": "imports Python code into the server",
    }

    def model_rules(self, model: ModelView) -> Sequence[RuleResult | None]:
        fmt = model.format
        return [
            format_rule(self, fmt),
            quantization_rule(self, fmt, model.quantization, QUANTIZATION),
            supported_rule(model),
            gpu_required_rule(self, model.gpus),
        ]

    def node_needs(self, gpus: int | None) -> tuple[NodeNeed, ...]:
        return gpu_required_needs(gpus)

    def command(self, launch: Launch) -> list[str]:
        """`vllm serve`: tensor-parallel over all the pod's GPUs.

        No `--quantization` is added for gptq/awq/fp8: vLLM reads the method from the checkpoint's
        `quantization_config` and picks the fastest kernel for it (e.g. awq_marlin); forcing `awq` would
        select the slower kernel. Users who want one can still pass `quantization` in `engine.args`.
        """
        return [
            "vllm",
            "serve",
            launch.model_path,
            "--host",
            HOST,
            "--port",
            str(PORT),
            "--tensor-parallel-size",
            str(launch.gpus),
            "--served-model-name",
            launch.served_name,
            *flag_args(self, launch.args, allow_trust_remote_code=launch.allow_trust_remote_code),
        ]
