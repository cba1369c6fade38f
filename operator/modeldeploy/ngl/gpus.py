"""GPU discovery through NVML: the free memory of each GPU this container can use.

Why NVML and not CUDA: the init container must not create a CUDA context (hundreds of MiB on the very
GPU it is measuring, and a CUDA runtime in the image); NVML is a small library the NVIDIA container
runtime injects with the `utility` capability.  No NVML, no driver or no GPU is not an error: the
answer is an empty list, and the estimate then keeps every layer on the CPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

from modeldeploy.ngl.estimate import GpuInfo

log = logging.getLogger(__name__)


def _visible_rank(env: dict[str, str]) -> Callable[[int, str], int | None] | None:
    """CUDA_VISIBLE_DEVICES as (NVML index, UUID) -> CUDA's number for it, None when hidden.

    None when the variable is unset (all visible, in NVML's order).  CUDA numbers the visible GPUs in
    the order the variable lists them, and llama.cpp's CUDA0, CUDA1... (and tensor_split) follow that.
    """
    raw = env.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return None
    wanted = [w.strip() for w in raw.split(",") if w.strip()]
    if not wanted or wanted == ["-1"]:
        return lambda _i, _u: None

    def rank(index: int, uuid: str) -> int | None:
        for pos, w in enumerate(wanted):
            if w == str(index) or (w.startswith("GPU-") and uuid.startswith(w)):
                return pos
        return None

    return rank


def _memory_info(nvml: Any, handle: Any) -> tuple[int, int]:
    """(free, total) bytes; v2 memory info when the driver has it (it excludes reserved memory)."""
    try:
        info = nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2)
    except Exception:  # noqa: BLE001 - older drivers or bindings: v1 is the same minus reserved memory
        info = nvml.nvmlDeviceGetMemoryInfo(handle)
    return int(info.free), int(info.total)


def discover(env: dict[str, str] | None = None, nvml: Any = None) -> list[GpuInfo]:
    """Free memory of each visible NVIDIA GPU, in CUDA's PCI-bus order; [] when there is none or no NVML."""
    env = dict(os.environ) if env is None else env
    if nvml is None:
        try:
            import pynvml  # nvidia-ml-py
        except ImportError:
            log.info("nvidia-ml-py is not installed: no GPU")
            return []
        nvml = pynvml
    try:
        nvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, ...
        log.info("NVML unavailable (%s): no GPU", exc)
        return []
    try:
        rank = _visible_rank(env)
        found: list[tuple[int, GpuInfo]] = []
        for i in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            uuid = nvml.nvmlDeviceGetUUID(handle)
            uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
            pos = i if rank is None else rank(i, uuid)
            if pos is None:
                continue
            name = nvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else str(name)
            free, total = _memory_info(nvml, handle)
            found.append((pos, GpuInfo(index=0, name=name, free_bytes=free, total_bytes=total)))
        found.sort(key=lambda item: item[0])
        return [g.model_copy(update={"index": n}) for n, (_, g) in enumerate(found)]
    except Exception as exc:  # noqa: BLE001 - a GPU that errors out is reported as none at all
        log.warning("NVML query failed (%s): no GPU", exc)
        return []
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


def from_mib_list(text: str) -> list[GpuInfo]:
    """`--gpu-free-mib 24000,24000` → GPUs with that much free memory ('' or '0'-only → none)."""
    gpus = []
    for i, part in enumerate(p.strip() for p in text.split(",") if p.strip()):
        mib = float(part)
        if mib < 0:
            raise ValueError(f"negative free memory {part!r}")
        gpus.append(GpuInfo(index=i, name=f"gpu{i}", free_bytes=int(mib * (1 << 20))))
    return [] if all(g.free_bytes == 0 for g in gpus) else gpus
