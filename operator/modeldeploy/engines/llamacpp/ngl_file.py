"""Read the auto-NGL init container's decision (`/var/run/modeldeploy/ngl.json`).

The init container runs on the node with the real GPUs and writes
`{"n_gpu_layers": N, "tensor_split": [...], "estimate": {...}, "fallback": bool, "reason": "..."}`.
The engine applies `n_gpu_layers` and `tensor_split` and nothing else; a missing or malformed file means
the init container did not do its job, and starting with a guess instead would hide that.
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class NglFileError(ValueError):
    """The NGL file is missing or not what the init container writes; the message says which."""


@dataclass(frozen=True)
class NglDecision:
    """The parts of the file the engine uses, plus the rest for the log."""

    n_gpu_layers: int
    tensor_split: list[float] = field(default_factory=list)
    fallback: bool = False
    reason: str = ""
    estimate: dict[str, Any] = field(default_factory=dict)


def read_ngl_file(path: str | Path) -> NglDecision:
    """Parse and validate the file; raise NglFileError with one sentence naming the problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise NglFileError(
            f"The auto-NGL file {path} does not exist: the auto-ngl init container did not write it "
            "(check its log), or set engine.nGpuLayers to a number to skip the estimate."
        ) from None
    except OSError as exc:
        raise NglFileError(f"The auto-NGL file {path} cannot be read: {exc.strerror}.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NglFileError(f"The auto-NGL file {path} is not valid JSON ({exc.msg} at line {exc.lineno}).") from None
    if not isinstance(data, dict):
        raise NglFileError(f"The auto-NGL file {path} must hold a JSON object.")
    layers = data.get("n_gpu_layers")
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < -1:
        raise NglFileError(f"The auto-NGL file {path} has n_gpu_layers {layers!r}; it must be an integer >= -1.")
    split = data.get("tensor_split") or []
    if (
        not isinstance(split, list)
        or len(split) > 128
        or any(isinstance(v, bool) or not isinstance(v, int | float) or v < 0 for v in split)
    ):
        raise NglFileError(
            f"The auto-NGL file {path} has tensor_split {split!r}; it must be a list of at most 128 non-negative "
            "numbers."
        )
    raw_estimate = data.get("estimate")
    estimate: dict[str, Any] = raw_estimate if isinstance(raw_estimate, dict) else {}
    return NglDecision(
        n_gpu_layers=layers,
        tensor_split=[float(v) for v in split],
        fallback=bool(data.get("fallback", False)),
        reason=str(data.get("reason", "")),
        estimate=estimate,
    )


def hide_gpus_for_zero_layers(decision: NglDecision, env: MutableMapping[str, str]) -> bool:
    """Hide the GPUs from llama.cpp when auto-NGL put no layer on them; True when it did.

    Why: with a visible GPU llama.cpp still takes about 1.2 GiB there at -ngl 0 (CUDA context, cuBLAS,
    the compute buffer of op offload; docs/auto-ngl-validation.md), and 0 layers means not even one
    layer with the fixed cost fitted, so that would likely fail at the first batch.  Hidden (CUDA reads
    CUDA_VISIBLE_DEVICES once, when xllamacpp first loads it), llama.cpp runs on the CPU and takes none.
    """
    if decision.n_gpu_layers != 0:
        return False
    env["CUDA_VISIBLE_DEVICES"] = ""
    return True
