"""`python -m modeldeploy.engines.llamacpp --model PATH [--param k=v]... [--ngl-file F | --n-gpu-layers N]`.

Exit codes: 0 stopped by a signal; 1 llama.cpp failed to load; 2 bad arguments, parameters, model path or
NGL file (one sentence on stderr, no traceback); 3 a pre-flight check found that the start would fail
(the seed's fix is in the log and in the container's termination message, which the operator reads).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from modeldeploy.engines.llamacpp import preflight
from modeldeploy.engines.llamacpp.ngl_file import NglFileError, hide_gpus_for_zero_layers, read_ngl_file
from modeldeploy.engines.llamacpp.params import (
    API_KEY_ENV,
    OFF_UNLESS_ASKED,
    ParamError,
    apply_params,
    describe,
    parse_assignments,
)

EXIT_USAGE = 2
EXIT_PREFLIGHT = 3
TERMINATION_LOG = "/dev/termination-log"


class UsageError(Exception):
    """A problem the user (or the rendered spec) must fix; printed as one sentence, exit 2."""


def log(record: dict[str, Any]) -> None:
    """One JSON object per line on stdout: easy to grep in `kubectl logs`, easy for tools to parse."""
    print(json.dumps(record, sort_keys=True, default=str), flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m modeldeploy.engines.llamacpp",
        description="Serve a GGUF model with llama.cpp (xllamacpp) on an OpenAI-compatible API.",
    )
    parser.add_argument("--model", required=True, help="GGUF file, or a directory holding exactly one model GGUF")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--mmproj", help="multimodal projector GGUF")
    parser.add_argument(
        "--alias",
        help="the model name /v1/models reports and requests name (the ModelDeployment's served model name); "
        "without it llama.cpp reports the file path",
    )
    ngl = parser.add_mutually_exclusive_group()
    ngl.add_argument("--ngl-file", help="auto-NGL JSON written by the init container")
    ngl.add_argument("--n-gpu-layers", type=int, help="exact number of layers to offload (0 = CPU only)")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a llama.cpp common_params field, nested with dots (n_ctx=4096, sampling.top_k=20)",
    )
    parser.add_argument(
        "--metrics-relay-port",
        type=int,
        help="also serve GET /metrics on this port without the API key (llama.cpp asks for the key there "
        "when one is set; the endpoint picker and Prometheus send none)",
    )
    parser.add_argument(
        "--preflight",
        choices=("fail", "warn"),
        default=os.environ.get("MODELDEPLOY_PREFLIGHT", "fail"),
        help="stop (default) or only warn when a check shows the start cannot work",
    )
    return parser


def resolve_model(path: str) -> Path:
    """The GGUF to load; a directory is accepted when it holds exactly one non-projector GGUF."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        candidates = sorted(f for f in p.rglob("*.gguf") if "mmproj" not in f.name.lower())
        if len(candidates) == 1:
            return candidates[0]
        names = ", ".join(f.name for f in candidates[:5]) or "none"
        raise UsageError(
            f"--model {path} is a directory with {len(candidates)} model GGUF files ({names}); set model.file."
        )
    raise UsageError(f"The model file {path} does not exist (did the fetch init container finish?).")


def _gpu_free_bytes() -> int | None:
    """Free memory of the GPUs llama.cpp sees (None on a CPU-only build or node)."""
    import xllamacpp

    total, seen = 0, False
    for dev in xllamacpp.get_device_info():
        kind = getattr(dev.get("type"), "name", str(dev.get("type")))
        if kind.endswith("_GPU") or kind.endswith("_IGPU"):
            seen = True
            total += int(dev.get("memory_free") or 0)
    return total if seen else None


def configure(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """Build CommonParams from argv; return it and the record logged before the start."""
    # Before xllamacpp (and CUDA) load: a 0-layer decision hides the GPUs.
    hidden = hide_gpus_for_zero_layers(read_ngl_file(args.ngl_file), os.environ) if args.ngl_file else False
    import xllamacpp

    pairs = parse_assignments(args.param)
    params = xllamacpp.CommonParams()
    applied = apply_params(params, pairs)  # raises ParamError naming every bad one

    model = resolve_model(args.model)
    params.model.path = str(model)
    if args.mmproj:
        if not Path(args.mmproj).is_file():
            raise UsageError(f"The multimodal projector {args.mmproj} does not exist.")
        params.mmproj.path = args.mmproj
    params.hostnames = [args.host]
    params.port = args.port
    if args.alias:
        params.model_alias = {args.alias}
    if "endpoint_metrics" not in applied:
        # /metrics (llamacpp:requests_processing, llamacpp:requests_deferred) is what the autoscaler and
        # the gateway's endpoint picker read; llama.cpp leaves it off unless asked (docs/autoscaling.md).
        params.endpoint_metrics = True
    for feature in OFF_UNLESS_ASKED:
        # The web UI and /slots are off unless engine.args turns them on (docs/security.md).
        if feature not in applied:
            setattr(params, feature, False)
    api_key = os.environ.get(API_KEY_ENV, "")
    if api_key:
        # From spec.auth's Secret (a secretKeyRef): never in argv, and only its presence is logged below.
        # llama.cpp then asks for it on every route but its health endpoints (/health, /v1/health), so the
        # probes keep working (docs/security.md, "API keys").
        params.api_keys = [api_key]

    ngl_record: dict[str, Any]
    if args.ngl_file:
        decision = read_ngl_file(args.ngl_file)
        params.n_gpu_layers = decision.n_gpu_layers
        if decision.tensor_split and "tensor_split" not in applied:  # a user's explicit split wins
            width = len(params.tensor_split)
            params.tensor_split = decision.tensor_split + [0.0] * (width - len(decision.tensor_split))
        ngl_record = {"source": "auto-ngl", "file": args.ngl_file, "fallback": decision.fallback}
        ngl_record["reason"] = decision.reason
        if hidden:
            ngl_record["gpus_hidden"] = "0 layers: CUDA_VISIBLE_DEVICES is empty, llama.cpp uses no GPU memory"
    elif args.n_gpu_layers is not None:
        if args.n_gpu_layers < -1:
            raise UsageError(f"--n-gpu-layers {args.n_gpu_layers} must be -1 or more.")
        params.n_gpu_layers = args.n_gpu_layers
        ngl_record = {"source": "engine.nGpuLayers"}
    else:
        ngl_record = {"source": "llama.cpp default"}

    quota = preflight.cpu_quota()
    if quota and "cpuparams.n_threads" not in applied:
        params.cpuparams.n_threads = quota
        if "cpuparams_batch.n_threads" not in applied:
            params.cpuparams_batch.n_threads = quota

    record = {
        "event": "llamacpp.params",
        "model": params.model.path,
        "mmproj": params.mmproj.path or None,
        "host": args.host,
        "port": params.port,
        "alias": args.alias,
        "metrics": params.endpoint_metrics,
        "api_key": bool(api_key),  # whether one is required; never the key
        "n_gpu_layers": params.n_gpu_layers,
        "tensor_split": describe(params.tensor_split),
        "ngl": ngl_record,
        "params": applied,
        "effective": {
            name: describe(value)
            for name, value in (
                ("n_ctx", params.n_ctx),
                ("n_parallel", params.n_parallel),
                ("n_batch", params.n_batch),
                ("ctx_shift", params.ctx_shift),
                ("cache_type_k", params.cache_type_k),
                ("cache_type_v", params.cache_type_v),
                ("flash_attn_type", params.flash_attn_type),
                ("cpuparams.n_threads", params.cpuparams.n_threads),
                ("sampling.top_k", params.sampling.top_k),
                ("sampling.temp", params.sampling.temp),
            )
        },
    }
    return params, record


def run_preflight(params: Any, mode: str) -> list[preflight.Finding]:
    """Log each finding with the seed's fix; return the ones that stop the start."""
    plan = preflight.Plan(
        n_ctx=params.n_ctx,
        n_parallel=params.n_parallel,
        n_gpu_layers=params.n_gpu_layers,
        ctx_shift=params.ctx_shift,
        multimodal=bool(params.mmproj.path),
        cache_type_k=int(params.cache_type_k),
        cache_type_v=int(params.cache_type_v),
        no_kv_offload=params.no_kv_offload,
        fit_params=params.fit_params,
    )
    try:
        shape = preflight.read_shape(params.model.path)
    except (ValueError, OSError, KeyError) as exc:
        log({"event": "llamacpp.preflight", "skipped": f"cannot read the GGUF header: {exc}"})
        shape = None
    findings, figures = preflight.check(plan, shape, preflight.host_memory_bytes(), _gpu_free_bytes())
    log({"event": "llamacpp.preflight", "figures": figures, "findings": [f.as_dict() for f in findings]})
    for finding in findings:
        level = "error" if finding.fatal and mode == "fail" else "warning"
        log({"event": "llamacpp.issue", "level": level, **finding.as_dict()})
    return [f for f in findings if f.fatal and mode == "fail"]


def _termination_message(text: str) -> None:
    """Kubernetes copies this file into the pod status, where the operator turns it into a condition."""
    path = os.environ.get("MODELDEPLOY_TERMINATION_LOG", TERMINATION_LOG)
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text[:4000])
    except OSError:
        pass


def fail(message: str, code: int) -> int:
    print(message, file=sys.stderr, flush=True)
    _termination_message(message)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        params, record = configure(args)
    except (ParamError, NglFileError, UsageError) as exc:
        return fail(str(exc), EXIT_USAGE)
    blocking = run_preflight(params, args.preflight)
    log(record)
    if blocking:
        text = " ".join(f"{f.message}. Fix: {f.fix}" for f in blocking)
        return fail(f"Not starting llama.cpp: {text}", EXIT_PREFLIGHT)

    from modeldeploy.engines.llamacpp.server import serve

    def ready(_address: str) -> None:
        if args.metrics_relay_port:
            from modeldeploy.engines.llamacpp import relay

            key = next(iter(params.api_keys), None)
            relay.start(args.metrics_relay_port, f"http://127.0.0.1:{params.port}", key, log)

    return serve(params, log, ready)


if __name__ == "__main__":
    sys.exit(main())
