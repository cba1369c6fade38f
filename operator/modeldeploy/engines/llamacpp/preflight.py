"""Checks before llama.cpp starts, for the causes of the seed's three "Common Issues".

The seed lists three server errors users meet only after a request fails (an image that cannot be
processed, a request that exceeds the context, a prompt too big for the KV cache). Their causes are
visible before the model loads: the per-slot context, context shift being off with a multimodal
projector, and a KV cache that cannot fit beside the weights. The selection colleague checks what the
parameters alone show (engines/llamacpp/checks.py); here, in the pod, we also know the GGUF's shape and
the node's memory, so the KV cache is sized for real. Each finding carries the seed's own fix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gguf

from modeldeploy.ngl.gguf_header import ArrayInfo, GGUFHeader, read_header

# Below these per-slot contexts the seed's errors are likely: chat templates plus a short exchange
# already take several hundred tokens, and one image takes hundreds to thousands of tokens.
MIN_SLOT_CTX_TEXT = 1024
MIN_SLOT_CTX_MULTIMODAL = 4096

# Far above any model's layer count (DeepSeek-V3: 61, Llama 3.1 405B: 126); a header claiming more is refused.
MAX_LAYERS = 4096

FIX_IMAGE_OOM = "This could be caused by running out of memory. You can try reducing memory usage by decreasing n_ctx."
FIX_CONTEXT_TEXT = "Please increase the context size by either increasing n_ctx or reducing n_parallel."
FIX_CONTEXT = (
    "If you are using the multimodal feature, the ctx_shift is disabled by default. Please increase the "
    "context size by either increasing n_ctx or reducing n_parallel."
)
FIX_KV = (
    "This could be caused by the KV cache allocation failure. You can try to reduce the context size by either "
    "reducing n_ctx or increasing n_parallel, or loading a partial model onto the GPU by adjusting n_gpu_layers."
)


@dataclass(frozen=True)
class Finding:
    """One likely cause of a seed error; `fatal` ones stop the start (the load would fail anyway)."""

    issue: str  # slot-context-too-small | multimodal-no-context-shift | kv-cache-cannot-fit
    fatal: bool
    message: str
    fix: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelShape:
    """What the KV cache size depends on, read from the GGUF header (never the weights)."""

    arch: str
    n_layer: int
    n_ctx_train: int
    kv_heads_per_layer: tuple[int, ...]
    key_length: int
    value_length: int
    file_bytes: int

    def kv_bytes(self, n_ctx: int, bytes_k: float, bytes_v: float, layers: int | None = None) -> int:
        """KV cache bytes for `n_ctx` cells over the first `layers` layers (all by default)."""
        heads = self.kv_heads_per_layer[: self.n_layer if layers is None else max(0, min(layers, self.n_layer))]
        per_cell = sum(h * (self.key_length * bytes_k + self.value_length * bytes_v) for h in heads)
        return int(per_cell * n_ctx)


def _field(header: GGUFHeader, key: str) -> Any:
    """A metadata value; a short numeric array (per-layer head counts) as a list, a long one as None."""
    value = header.metadata.get(key)
    if isinstance(value, ArrayInfo):
        return list(value.values) if value.values is not None else None
    return value


def read_shape(path: str | Path) -> ModelShape:
    """Read the model's shape from its GGUF metadata (raises ValueError when a needed key is missing, or
    GGUFHeaderError, a ValueError too, for a file that is not well-formed GGUF).

    The file comes from wherever `model.uri` points, so it is read with the project's bounded header
    parser (ngl/gguf_header.py: every count and length checked against the file and fixed limits before
    use), never `gguf.GGUFReader`, which maps the file and builds arrays whose sizes the header claims."""
    header = read_header(path)
    arch = _field(header, "general.architecture")
    if not isinstance(arch, str):
        raise ValueError(f"{path} has no general.architecture")
    n_layer = _field(header, f"{arch}.block_count")
    n_embd = _field(header, f"{arch}.embedding_length")
    n_head = _field(header, f"{arch}.attention.head_count")
    n_head_kv = _field(header, f"{arch}.attention.head_count_kv")
    if not isinstance(n_layer, int) or not isinstance(n_embd, int):
        raise ValueError(f"{path} lacks {arch}.block_count or {arch}.embedding_length")
    if not 0 < n_layer <= MAX_LAYERS:  # a per-layer list of that length is built below
        raise ValueError(f"{path}: {arch}.block_count {n_layer} is not between 1 and {MAX_LAYERS}")
    if isinstance(n_head, list):  # some architectures store per-layer head counts
        n_head = max(n_head) if n_head else 0
    if n_head_kv is None:
        n_head_kv = n_head
    per_layer = list(n_head_kv) if isinstance(n_head_kv, list) else [int(n_head_kv or 0)] * n_layer
    head_dim = n_embd // n_head if n_head else 0
    key_length = _field(header, f"{arch}.attention.key_length") or head_dim
    value_length = _field(header, f"{arch}.attention.value_length") or head_dim
    return ModelShape(
        arch=arch,
        n_layer=n_layer,
        n_ctx_train=int(_field(header, f"{arch}.context_length") or 0),
        kv_heads_per_layer=tuple(int(h) for h in per_layer),
        key_length=int(key_length),
        value_length=int(value_length),
        file_bytes=header.file_size,
    )


def bytes_per_element(ggml_type: int) -> float:
    """Size of one KV element of a ggml type (f16: 2, q8_0: 34/32, ...)."""
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(int(ggml_type))]
    return size / block


def host_memory_bytes() -> int | None:
    """Memory this container may still use: the cgroup limit when set, else MemAvailable."""
    available: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),  # v1
    ):
        try:
            raw = Path(limit_file).read_text().strip()
            used = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if raw.isdigit() and int(raw) < (1 << 60):
            room = int(raw) - used
            available = room if available is None else min(available, room)
        break
    return available


def cpu_quota() -> int | None:
    """CPUs the cgroup allows (cpu.max), so llama.cpp does not start one thread per host core."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, int(int(quota) // int(period)))


@dataclass(frozen=True)
class Plan:
    """The parameters the checks read, taken from the final CommonParams."""

    n_ctx: int
    n_parallel: int
    n_gpu_layers: int
    ctx_shift: bool
    multimodal: bool
    cache_type_k: int
    cache_type_v: int
    no_kv_offload: bool
    fit_params: bool


def check(
    plan: Plan,
    shape: ModelShape | None,
    host_free: int | None,
    gpu_free: int | None,
) -> tuple[list[Finding], dict[str, Any]]:
    """Findings, plus the figures behind them (logged so a user can check the arithmetic)."""
    findings: list[Finding] = []
    n_ctx = plan.n_ctx or (shape.n_ctx_train if shape else 0)
    parallel = max(1, plan.n_parallel)
    slot_ctx = n_ctx // parallel if n_ctx else 0
    figures: dict[str, Any] = {"n_ctx": n_ctx, "n_parallel": parallel, "slot_ctx": slot_ctx}

    if plan.multimodal and not plan.ctx_shift and slot_ctx and slot_ctx < MIN_SLOT_CTX_MULTIMODAL:
        findings.append(
            Finding(
                "multimodal-no-context-shift",
                False,
                f"a multimodal projector is loaded with ctx_shift off and only {slot_ctx} tokens of context per "
                f"slot (n_ctx {n_ctx} / n_parallel {parallel}); requests with images will fail with 'the request "
                "exceeds the available context size'",
                FIX_CONTEXT,
            )
        )
    elif slot_ctx and slot_ctx < MIN_SLOT_CTX_TEXT:
        findings.append(
            Finding(
                "slot-context-too-small",
                False,
                f"each of the {parallel} slots gets only {slot_ctx} tokens of context (n_ctx {n_ctx} / n_parallel "
                f"{parallel}); longer conversations will fail with 'the request exceeds the available context size'",
                FIX_CONTEXT_TEXT,
            )
        )

    if shape is None or not n_ctx:
        return findings, figures
    bk, bv = bytes_per_element(plan.cache_type_k), bytes_per_element(plan.cache_type_v)
    kv_total = shape.kv_bytes(n_ctx, bk, bv)
    gpu_layers = 0 if gpu_free is None else (shape.n_layer if plan.n_gpu_layers < 0 else plan.n_gpu_layers)
    gpu_layers = min(gpu_layers, shape.n_layer)
    kv_gpu = 0 if plan.no_kv_offload else shape.kv_bytes(n_ctx, bk, bv, gpu_layers)
    kv_host = kv_total - kv_gpu
    weights_gpu = shape.file_bytes * gpu_layers // max(1, shape.n_layer)
    weights_host = shape.file_bytes - weights_gpu
    figures.update(
        kv_cache_bytes=kv_total,
        kv_gpu_bytes=kv_gpu,
        kv_host_bytes=kv_host,
        weights_gpu_bytes=weights_gpu,
        weights_host_bytes=weights_host,
        gpu_layers=gpu_layers,
        gpu_free_bytes=gpu_free,
        host_free_bytes=host_free,
    )
    # With n_ctx 0 and fit_params on, llama.cpp shrinks the context itself: only warn then.
    may_fail = not (plan.n_ctx == 0 and plan.fit_params)
    for where, kv, weights, free in (
        ("GPU", kv_gpu, weights_gpu, gpu_free),
        ("host", kv_host, weights_host, host_free),
    ):
        if free is None or kv == 0:
            continue
        if kv > free:
            findings.append(
                Finding(
                    "kv-cache-cannot-fit",
                    may_fail,
                    f"the KV cache for n_ctx {n_ctx} needs {_gib(kv)} of {where} memory but only {_gib(free)} is "
                    "free; requests will fail with 'Input prompt is too big compared to KV size'",
                    FIX_KV,
                )
            )
        elif kv + weights > free:
            findings.append(
                Finding(
                    "kv-cache-cannot-fit",
                    False,
                    f"the KV cache for n_ctx {n_ctx} ({_gib(kv)}) and the weights on the {where} ({_gib(weights)}) "
                    f"exceed the {_gib(free)} of free {where} memory; the KV cache"
                    + (" or image encoding" if plan.multimodal else "")
                    + " may fail to allocate",
                    f"{FIX_KV} {FIX_IMAGE_OOM}" if plan.multimodal else FIX_KV,
                )
            )
    return findings, figures


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB"
