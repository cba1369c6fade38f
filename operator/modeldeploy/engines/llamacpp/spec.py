"""llama.cpp (through xllamacpp): GGUF models on CUDA, CPU or Apple silicon.

The container runs this package's entrypoint (`python -m modeldeploy.engines.llamacpp`), which takes
`engine.args` as `--param key=value` common_params and reads the auto-NGL result file that the init
container (`init_command`, the ngl image) writes when GPU layers are left to -1 on a GPU placement.
Our image: non-root, read-only root; it writes only /tmp and the cache. llama-server's /metrics is on
the API port (the entrypoint enables `endpoint_metrics` unless `engine.args` sets it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from modeldeploy.engines.args import format_value
from modeldeploy.engines.base import HOST, PORT, Engine, Launch, Metrics, ModelView, NodeNeed, RenderError, RuleResult
from modeldeploy.engines.llamacpp.checks import llamacpp_warnings
from modeldeploy.engines.llamacpp.params import API_KEY_ENV, METRICS_RELAY_PORT, REFUSED
from modeldeploy.engines.rules import gpu_when_available_needs, gpu_when_available_reason
from modeldeploy.formats import ArgValue, ModelFormat, truthy
from modeldeploy.model_paths import NGL_FILE

_PARAM_KEY = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")


def auto_ngl(n_gpu_layers: int, gpus: int) -> bool:
    """Whether the auto-NGL init container runs: only for -1 and only where there are GPUs to fill."""
    return n_gpu_layers == -1 and gpus > 0


class LlamaCpp(Engine):
    name = "llama.cpp"
    label = "llama.cpp"
    image_key = "llamacpp"
    formats = frozenset({ModelFormat.GGUFV2})
    auto_rank = 1
    prefers_gpu_share = True
    # The entrypoint turns endpoint_metrics on unless engine.args turns it off (tests/engine measures the gauges).
    metrics = Metrics(port=PORT, load=("llamacpp:requests_processing", "llamacpp:requests_deferred"))
    runs_as_non_root = True
    read_only_root = True
    loads_projector = True
    # common_params the entrypoint derives from its own flags (--model, --port, -ngl, --alias).
    reserved_args = frozenset({"n_gpu_layers", "port", "hostnames", "model.path", "mmproj.path", "model_alias"})
    arg_spelling = "param"  # common_params names, compared before the first dot
    refused_args = REFUSED  # the entrypoint refuses the same table (engines/llamacpp/params.py)
    # The entrypoint reads the key from this variable (llama-server's own name for it) into the server's
    # api_keys and never logs it; /health stays open for the probes (docs/security.md, "API keys").
    api_key_env = API_KEY_ENV
    # llama.cpp asks for the key on /metrics as well; with one, the entrypoint relays /metrics (only) on
    # this port, so the picker and Prometheus read the gauges without the key (docs/security.md).
    metrics_relay_port = METRICS_RELAY_PORT

    def model_rules(self, model: ModelView) -> Sequence[RuleResult | None]:
        fmt = model.format
        if fmt == ModelFormat.GGUFV2:
            return [RuleResult(True, "format ggufv2 is the GGUF format llama.cpp loads")]
        return [RuleResult(False, f"format {fmt.value} is not GGUF (llama.cpp loads ggufv2 only)")]

    def node_needs(self, gpus: int | None) -> tuple[NodeNeed, ...]:
        # Apple silicon only when no Linux node is usable: the Linux container is its ordinary image.
        return gpu_when_available_needs(gpus, apple_fallback=True)

    def gpu_rule_reason(self, need: NodeNeed, gpus: int | None, earlier_failed: bool) -> str | None:
        return gpu_when_available_reason(need, gpus, earlier_failed)

    def warnings(self, model: ModelView) -> tuple[str, ...]:
        return llamacpp_warnings(model)

    def params(self, args: Mapping[str, ArgValue]) -> list[str]:
        """`engine.args` as `--param key=value` pairs for the xllamacpp entrypoint, sorted by key."""
        out: list[str] = []
        for key in sorted(args):
            if not _PARAM_KEY.match(key):
                raise RenderError(f"engine.args key {key!r} is not a llama.cpp common_params name (e.g. n_ctx)")
            if key in self.reserved_args:
                raise RenderError(f"engine.args must not set {key}: ModelDeploy sets it for llama.cpp")
            refused = self.refused_arg(key)
            if refused:
                raise RenderError(refused)
            out.extend(["--param", f"{key}={format_value(args[key])}"])
        return out

    def check_args(self, args: Mapping[str, ArgValue], *, allow_trust_remote_code: bool = False) -> None:
        self.params(args)

    def command(self, launch: Launch) -> list[str]:
        """The project's xllamacpp entrypoint.

        GPU layers: -1 with GPUs reads the auto-NGL init container's result file; any other value is
        passed as is, except that a CPU-only placement always gets 0 (there is nothing to offload to).
        """
        cmd = ["python", "-m", "modeldeploy.engines.llamacpp", "--model", launch.model_path]
        cmd += ["--host", HOST, "--port", str(PORT)]
        # The served model name, as vLLM and SGLang get it: /v1/models and the gateway's route by model
        # name then agree for every engine (docs/gateway.md); without it llama.cpp reports the file path.
        cmd += ["--alias", launch.served_name]
        if launch.mmproj_path:
            cmd += ["--mmproj", launch.mmproj_path]
        if launch.api_key:
            cmd += ["--metrics-relay-port", str(METRICS_RELAY_PORT)]
        if auto_ngl(launch.n_gpu_layers, launch.gpus):
            cmd += ["--ngl-file", NGL_FILE]
        else:
            cmd += ["--n-gpu-layers", str(launch.n_gpu_layers if launch.gpus > 0 else 0)]
        return cmd + self.params(launch.args)

    def init_command(self, launch: Launch) -> list[str] | None:
        """The auto-NGL init container (docs/ngl.md), when it runs: same context and cache settings as the server."""
        if not auto_ngl(launch.n_gpu_layers, launch.gpus):
            return None
        return ngl_command(launch.model_path, launch.mmproj_path, launch.args)


def ngl_command(model_path: str, mmproj_path: str | None, args: Mapping[str, ArgValue]) -> list[str]:
    """`python -m modeldeploy.ngl.initcontainer`: the estimate uses the server's context and cache settings."""
    cmd = ["python", "-m", "modeldeploy.ngl.initcontainer", "--model", model_path, "--output", NGL_FILE]
    if "n_ctx" in args:
        cmd += ["--ctx-size", format_value(args["n_ctx"])]
    if "n_parallel" in args:
        cmd += ["--parallel", format_value(args["n_parallel"])]
    # The K and V caches may differ (llama.cpp's -ctk/-ctv), and batch sizes set the compute buffers.
    for key, flag in (
        ("cache_type_k", "--cache-type-k"),
        ("cache_type_v", "--cache-type-v"),
        ("n_batch", "--batch-size"),
        ("n_ubatch", "--ubatch-size"),
    ):
        if key in args:
            cmd += [flag, format_value(args[key])]
    if truthy(args.get("flash_attn")):
        cmd += ["--flash-attn"]
    # One KV stream for all sequences: attention runs over all of n_ctx, not n_ctx / n_parallel.
    if truthy(args.get("kv_unified")):
        cmd += ["--kv-unified"]
    if mmproj_path:
        cmd += ["--mmproj", mmproj_path]
    return cmd
