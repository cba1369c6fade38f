"""`modeldeploy ngl` and the init container share this: flags, the decision, the JSON, the log line.

Errors a user can fix (missing or malformed GGUF, bad flag values) print one sentence naming the file
and the problem and exit 2; no traceback.  An estimate that fails on a well-formed file is not an
error: it is the documented fallback (all layers, `"fallback": true`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from modeldeploy.ngl import gpus as gpu_discovery
from modeldeploy.ngl.estimate import GpuInfo, NglResult, decide
from modeldeploy.ngl.facts import projector_facts
from modeldeploy.ngl.gguf_header import GGUFHeaderError, read_header
from modeldeploy.ngl.memory import CACHE_TYPES, Options

log = logging.getLogger("modeldeploy.ngl")


class UsageError(ValueError):
    """A flag value we cannot use; the message is the one sentence printed."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of docs/ngl.md; mounted by `modeldeploy ngl` and by the init container."""
    parser.add_argument("--model", required=True, help="the model's GGUF file (first shard of a split model)")
    parser.add_argument(
        "--gpu-free-mib",
        default=None,
        help="free MiB per GPU, comma-separated (default: ask NVML); 0 means no GPU",
    )
    parser.add_argument(
        "--ctx-size",
        type=int,
        default=None,
        help="llama.cpp's n_ctx (-c): the KV cache of all sequences together (default: the model's)",
    )
    parser.add_argument(
        "--parallel", type=int, default=1, help="sequences served at once (llama.cpp -np; each gets n_ctx / N)"
    )
    parser.add_argument(
        "--kv-unified", action="store_true", help="llama.cpp --kv-unified: one KV stream shared by all sequences"
    )
    parser.add_argument("--cache-type", choices=sorted(CACHE_TYPES), default="f16", help="K and V cache type")
    parser.add_argument("--cache-type-k", choices=sorted(CACHE_TYPES), default=None, help="K cache type")
    parser.add_argument("--cache-type-v", choices=sorted(CACHE_TYPES), default=None, help="V cache type")
    parser.add_argument("--flash-attn", action="store_true", help="llama.cpp runs with flash attention")
    parser.add_argument("--ubatch-size", type=int, default=512, help="llama.cpp -ub")
    parser.add_argument("--batch-size", type=int, default=2048, help="llama.cpp -b")
    parser.add_argument("--mmproj", default=None, help="a separate multimodal projector GGUF (loaded on GPU 0)")
    parser.add_argument(
        "--overhead-mib", type=float, default=None, help="per-GPU fixed overhead (default: the measured one)"
    )
    parser.add_argument("--margin-mib", type=float, default=None, help="per-GPU safety margin (default: measured)")
    parser.add_argument("-o", "--output-format", dest="output_format", choices=("json", "text"), default="json")


def options_from_args(args: argparse.Namespace) -> Options:
    """Options from parsed flags; UsageError for impossible values."""
    if args.ctx_size is not None and args.ctx_size < 0:
        raise UsageError(f"--ctx-size must be 0 or more, not {args.ctx_size}")
    if args.parallel < 1:
        raise UsageError(f"--parallel must be at least 1, not {args.parallel}")
    kw: dict[str, object] = {
        "n_ctx": args.ctx_size or None,
        "n_parallel": args.parallel,
        "kv_unified": bool(getattr(args, "kv_unified", False)),
        "cache_type_k": args.cache_type_k or args.cache_type,
        "cache_type_v": args.cache_type_v or args.cache_type,
        "flash_attn": bool(args.flash_attn),
        "n_ubatch": args.ubatch_size,
        "n_batch": args.batch_size,
    }
    if getattr(args, "overhead_mib", None) is not None:
        kw["overhead_bytes"] = int(args.overhead_mib * (1 << 20))
    if getattr(args, "margin_mib", None) is not None:
        kw["margin_bytes"] = int(args.margin_mib * (1 << 20))
    try:
        return Options(**kw)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UsageError(f"invalid option {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def gpus_from_args(args: argparse.Namespace) -> list[GpuInfo]:
    """--gpu-free-mib when given, NVML otherwise."""
    if args.gpu_free_mib is None:
        return gpu_discovery.discover()
    try:
        return gpu_discovery.from_mib_list(args.gpu_free_mib)
    except ValueError:
        raise UsageError(f"--gpu-free-mib must be comma-separated MiB numbers, not {args.gpu_free_mib!r}") from None


def compute(args: argparse.Namespace) -> NglResult:
    """Read the header(s), find the GPUs, decide.  GGUFHeaderError/UsageError propagate."""
    options = options_from_args(args)
    header = read_header(args.model)
    projector = projector_facts(read_header(args.mmproj), options.flash_attn) if args.mmproj else None
    gpus = gpus_from_args(args)
    return decide(header, gpus, options, projector)


def render_text(result: NglResult) -> str:
    """A human summary: the decision, then one line per GPU."""
    head = f"n_gpu_layers: {result.n_gpu_layers}" + (" (fallback)" if result.fallback else "")
    lines = [head, f"reason: {result.reason}"]
    if result.tensor_split:
        lines.append("tensor_split: " + ",".join(map(str, result.tensor_split)))
    est = result.estimate
    if est is not None:
        lines.append(
            f"model: {est.architecture}, {est.block_count} blocks, {est.model_bytes / (1 << 30):.2f} GiB; "
            f"ctx {est.n_ctx} over {est.n_parallel} sequence(s) ({est.kv_cells} cells), "
            f"cache {est.cache_type_k}/{est.cache_type_v}, "
            f"flash-attn {'on' if est.flash_attn else 'off'}"
        )
        for g in est.gpus:
            mib = 1 << 20
            lines.append(
                f"gpu {g.index} {g.name}: free {g.free_bytes // mib} MiB, {g.layers} layers, "
                f"weights {g.weights_bytes // mib} + kv {g.kv_bytes // mib} + graph {g.graph_bytes // mib} + "
                f"overhead {g.overhead_bytes // mib} + projector {g.projector_bytes // mib} = "
                f"{g.total_bytes // mib} MiB (margin {g.margin_bytes // mib})"
            )
    return "\n".join(lines)


def log_line(result: NglResult) -> str:
    """The one-line decision for the pod log."""
    return (
        f"auto-ngl: n_gpu_layers={result.n_gpu_layers} tensor_split={result.tensor_split} "
        f"fallback={str(result.fallback).lower()} reason={result.reason}"
    )


def main(args: argparse.Namespace) -> int:
    """Print the decision (JSON or text); 2 with one sentence on stderr for a bad file or flag."""
    try:
        result = compute(args)
    except (GGUFHeaderError, UsageError) as exc:
        print(f"modeldeploy ngl: {exc}", file=sys.stderr)
        return 2
    if args.output_format == "text":
        print(render_text(result))
    else:
        print(json.dumps(result.to_json_dict(), indent=2))
    return 0


def run_cli(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry (tests, scripts): parse argv with add_arguments and run main."""
    parser = argparse.ArgumentParser(
        prog="modeldeploy ngl", description="estimate llama.cpp GPU layers for a GGUF file"
    )
    add_arguments(parser)
    return main(parser.parse_args(argv))
