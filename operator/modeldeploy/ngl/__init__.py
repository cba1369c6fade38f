"""Auto-NGL: how many llama.cpp layers fit on the GPUs (see docs/ngl.md in shared spec and docs/auto-ngl-validation.md).

Modules: gguf_header (bounded header reader), architectures (per-architecture facts), estimate (the
pure estimate), gpus (NVML), cli (`modeldeploy ngl`), initcontainer (the init container's main).
"""

from modeldeploy.ngl.cli import run_cli
from modeldeploy.ngl.estimate import GpuInfo, NglResult, decide, estimate
from modeldeploy.ngl.gguf_header import GGUFHeader, GGUFHeaderError, read_header
from modeldeploy.ngl.memory import Options

__all__ = [
    "GGUFHeader",
    "GGUFHeaderError",
    "GpuInfo",
    "NglResult",
    "Options",
    "decide",
    "estimate",
    "read_header",
    "run_cli",
]
