"""Per-engine command lines: the engine server, the auto-NGL init container and the weights fetcher.

Every command is an argv list (`command`), never a shell string, so no value a user writes in
`engine.args` can be interpreted by a shell. Flags the renderer itself sets (host, port, model path,
tensor-parallel size, ...) are reserved: a user arg naming one is refused with a RenderError instead of
being appended, because argparse would let the later copy win and silently break the probes or the
GPU count.

How a bool in `engine.args` is spelled depends on the engine's CLI parser (see BOOL_STYLE):
- vLLM builds its engine flags with `argparse.BooleanOptionalAction`: true → `--flag`, false → `--no-flag`
  (false must be spelled out, since several vLLM flags default to true, e.g. prefix caching).
- transformers serve is a typer CLI whose bool options are `--flag/--no-flag`: same rule as vLLM.
- SGLang and mlx_lm.server use plain `store_true` flags that default to false: true → `--flag`,
  false → nothing (there is no `--no-flag` to pass, and false is already the default).
- llama.cpp: `--param key=true|false`, the entrypoint parses it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

from modeldeploy.engines import Engine
from modeldeploy.model_paths import NGL_FILE

PORT = 8000
PORT_NAME = "http"
HOST = "0.0.0.0"

ArgValue = str | int | float | bool
BoolStyle = Literal["negatable", "store_true"]


class RenderError(ValueError):
    """The ModelDeployment and Decision cannot be turned into objects; the message says why, for status."""


# The path readiness/liveness/startup probes GET. All five servers answer 200 on /health once the model
# is loaded: vLLM and SGLang (/health), the llama.cpp entrypoint (llama-server's /health, 503 while
# loading), transformers serve (>= 5.x: `GET /health`; the model given on the command line is loaded
# before the port opens), mlx_lm.server (`GET /health`, 503 when its generation thread is gone).
HEALTH_PATH: dict[Engine, str] = {
    Engine.VLLM: "/health",
    Engine.SGLANG: "/health",
    Engine.LLAMA_CPP: "/health",
    Engine.TRANSFORMERS: "/health",
    Engine.MLX: "/health",
}

BOOL_STYLE: dict[Engine, BoolStyle] = {
    Engine.VLLM: "negatable",
    Engine.SGLANG: "store_true",
    Engine.TRANSFORMERS: "negatable",
    Engine.MLX: "store_true",
}

# Flags (normalised, without dashes) the renderer sets itself; see the module docstring.
RESERVED_FLAGS: dict[Engine, frozenset[str]] = {
    Engine.VLLM: frozenset({"model", "host", "port", "tensor-parallel-size", "served-model-name"}),
    Engine.SGLANG: frozenset(
        {"model-path", "model", "host", "port", "tp", "tp-size", "tensor-parallel-size", "served-model-name"}
    ),
    Engine.TRANSFORMERS: frozenset({"host", "port", "force-model"}),
    Engine.MLX: frozenset({"model", "host", "port"}),
    # llama.cpp common_params the entrypoint derives from its own flags (--model, --port, -ngl).
    Engine.LLAMA_CPP: frozenset({"n_gpu_layers", "port", "hostnames", "model.path", "mmproj.path"}),
}

_FLAG_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PARAM_KEY = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")


def format_value(value: ArgValue) -> str:
    """One argv element for a value: bools as true/false, floats by repr (round-trips), the rest by str."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def normalise_flag(key: str) -> str:
    """`--max_model_len` → `max-model-len`: leading dashes dropped, `_` → `-` before the first dot.

    All four CLIs spell their flags with dashes (vLLM also accepts underscores, SGLang/typer/mlx do not),
    so normalising lets users write either. The part after a dot is left alone: vLLM's `--json-arg.key`
    form names a config field there, spelled as the field is.
    """
    stripped = key.lstrip("-")
    head, dot, tail = stripped.partition(".")
    flag = head.replace("_", "-") + dot + tail
    if not _FLAG_KEY.match(flag):
        raise RenderError(f"engine.args key {key!r} is not a command-line flag name")
    return flag


def flag_args(engine: Engine, args: Mapping[str, ArgValue]) -> list[str]:
    """`engine.args` as `--flag value` argv elements, sorted by flag, bools per BOOL_STYLE."""
    flags: dict[str, ArgValue] = {}
    for key, value in args.items():
        flag = normalise_flag(key)
        if flag in flags:
            raise RenderError(f"engine.args names the flag --{flag} twice (as {key!r} and another spelling)")
        if flag in RESERVED_FLAGS[engine]:
            raise RenderError(f"engine.args must not set --{flag}: ModelDeploy sets it for {engine.value}")
        flags[flag] = value
    out: list[str] = []
    for flag in sorted(flags):
        value = flags[flag]
        if isinstance(value, bool):
            if value:
                out.append(f"--{flag}")
            elif BOOL_STYLE[engine] == "negatable":
                out.append(f"--no-{flag}")
        else:
            out.extend([f"--{flag}", format_value(value)])
    return out


def llamacpp_params(args: Mapping[str, ArgValue]) -> list[str]:
    """`engine.args` as `--param key=value` pairs for the xllamacpp entrypoint, sorted by key."""
    out: list[str] = []
    for key in sorted(args):
        if not _PARAM_KEY.match(key):
            raise RenderError(f"engine.args key {key!r} is not a llama.cpp common_params name (e.g. n_ctx)")
        if key in RESERVED_FLAGS[Engine.LLAMA_CPP]:
            raise RenderError(f"engine.args must not set {key}: ModelDeploy sets it for llama.cpp")
        out.extend(["--param", f"{key}={format_value(args[key])}"])
    return out


def vllm_command(model_path: str, served_name: str, gpus: int, args: Mapping[str, ArgValue]) -> list[str]:
    """`vllm serve`: tensor-parallel over all the pod's GPUs.

    No `--quantization` is added for gptq/awq/fp8: vLLM reads the method from the checkpoint's
    `quantization_config` and picks the fastest kernel for it (e.g. awq_marlin); forcing `awq` would
    select the slower kernel. Users who want one can still pass `quantization` in `engine.args`.
    """
    return [
        "vllm",
        "serve",
        model_path,
        "--host",
        HOST,
        "--port",
        str(PORT),
        "--tensor-parallel-size",
        str(gpus),
        "--served-model-name",
        served_name,
        *flag_args(Engine.VLLM, args),
    ]


def sglang_command(model_path: str, served_name: str, gpus: int, args: Mapping[str, ArgValue]) -> list[str]:
    """`python -m sglang.launch_server`, tensor-parallel over all the pod's GPUs."""
    return [
        "python",
        "-m",
        "sglang.launch_server",
        "--model-path",
        model_path,
        "--host",
        HOST,
        "--port",
        str(PORT),
        "--tp-size",
        str(gpus),
        "--served-model-name",
        served_name,
        *flag_args(Engine.SGLANG, args),
    ]


def transformers_command(model_path: str, args: Mapping[str, ArgValue]) -> list[str]:
    """`transformers serve <path>` (transformers >= 5.x).

    The model is the positional `force_model` argument: it is loaded before the server starts, used
    for every request whatever `model` the client names, and never unloaded for idleness. (In 4.5x it
    was the `--force-model` option and loaded lazily; the image pins 5.x.) The device is `auto`: the
    GPUs the pod was given, else CPU.
    """
    return [
        "transformers",
        "serve",
        model_path,
        "--host",
        HOST,
        "--port",
        str(PORT),
        *flag_args(Engine.TRANSFORMERS, args),
    ]


def mlx_command(model_path: str, args: Mapping[str, ArgValue]) -> list[str]:
    """`mlx_lm.server --model <path>` on an Apple-silicon node."""
    return ["mlx_lm.server", "--model", model_path, "--host", HOST, "--port", str(PORT), *flag_args(Engine.MLX, args)]


def llamacpp_command(
    model_path: str,
    mmproj_path: str | None,
    n_gpu_layers: int,
    gpus: int,
    args: Mapping[str, ArgValue],
) -> list[str]:
    """The project's xllamacpp entrypoint.

    GPU layers: -1 with GPUs reads the auto-NGL init container's result file; any other value is passed
    as is, except that a CPU-only placement always gets 0 (there is nothing to offload to).
    """
    cmd = ["python", "-m", "modeldeploy.engines.llamacpp", "--model", model_path, "--host", HOST, "--port", str(PORT)]
    if mmproj_path:
        cmd += ["--mmproj", mmproj_path]
    if auto_ngl(n_gpu_layers, gpus):
        cmd += ["--ngl-file", NGL_FILE]
    else:
        cmd += ["--n-gpu-layers", str(n_gpu_layers if gpus > 0 else 0)]
    return cmd + llamacpp_params(args)


def auto_ngl(n_gpu_layers: int, gpus: int) -> bool:
    """Whether the auto-NGL init container runs: only for -1 and only where there are GPUs to fill."""
    return n_gpu_layers == -1 and gpus > 0


def _truthy(value: ArgValue | None) -> bool:
    """flash_attn as users write it: true, 1, "on", "true", "enabled" (but not "auto"/"off")."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "on", "yes", "enabled")
    return bool(value)


def ngl_command(model_path: str, mmproj_path: str | None, args: Mapping[str, ArgValue]) -> list[str]:
    """The auto-NGL init container (ngl.md): the estimate uses the same context and cache settings."""
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
    if _truthy(args.get("flash_attn")):
        cmd += ["--flash-attn"]
    if mmproj_path:
        cmd += ["--mmproj", mmproj_path]
    return cmd


def fetch_command(uri: str, dest: str, files: list[str], sha256: str | None) -> list[str]:
    """The weights fetcher init container. Credentials come from env (a Secret), never from argv."""
    cmd = ["python", "-m", "modeldeploy.fetch", "--uri", uri, "--dest", dest]
    for f in files:
        cmd += ["--file", f]
    if sha256:
        cmd += ["--sha256", sha256]
    return cmd
