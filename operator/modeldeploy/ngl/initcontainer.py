"""The auto-NGL init container: `python -m modeldeploy.ngl.initcontainer --model PATH --output FILE [...]`.

It runs on the node that will run llama.cpp, so NVML sees the GPUs the engine will get.  It writes the
JSON of docs/ngl.md to --output (atomically: a half-written file must never be read by the engine), logs
the decision in one line, and exits 0.  A missing or malformed model file exits 2 with one sentence:
the pod then shows the init container's failure instead of llama.cpp crashing later.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from modeldeploy.ngl.cli import UsageError, add_arguments, compute, log_line
from modeldeploy.ngl.gguf_header import GGUFHeaderError

DEFAULT_OUTPUT = "/var/run/modeldeploy/ngl.json"
# The kubelet copies this file into the pod's status (state.terminated.message, at most 4 KiB); the
# operator reads n_gpu_layers from there into status.nGpuLayers (controller/ngl_report.py).
TERMINATION_LOG = "/dev/termination-log"


def termination_message(result: dict[str, object]) -> str:
    """The compact part of the decision that fits the kubelet's 4 KiB termination message."""
    keep = ("n_gpu_layers", "tensor_split", "fallback")
    return json.dumps({k: result.get(k) for k in keep}, separators=(",", ":"))


def write_termination_message(path: Path, text: str) -> None:
    """Best effort: outside a pod the file does not exist, and that is fine."""
    if path.exists():
        with contextlib.suppress(OSError):
            path.write_text(text)


def write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ngl-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """Decide, write the JSON, log the decision."""
    parser = argparse.ArgumentParser(prog="modeldeploy.ngl.initcontainer", description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help=f"where to write the JSON (default {DEFAULT_OUTPUT})")
    parser.add_argument(
        "--termination-log",
        default=TERMINATION_LOG,
        help=f"where the kubelet reads the termination message (default {TERMINATION_LOG})",
    )
    args = parser.parse_args(argv)
    try:
        result = compute(args)
    except (GGUFHeaderError, UsageError) as exc:
        print(f"auto-ngl: {exc}", file=sys.stderr)
        return 2
    doc = result.to_json_dict()
    text = json.dumps(doc, indent=2) + "\n"
    try:
        write_atomically(Path(args.output), text)
    except OSError as exc:
        print(f"auto-ngl: {args.output}: cannot write the result ({exc.strerror or exc})", file=sys.stderr)
        return 2
    write_termination_message(Path(args.termination_log), termination_message(doc))
    print(log_line(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
