"""Hold GPU memory so that exactly TARGET MiB stay free (as NVML reports it), until killed.

Usage: hold.py TARGET_MIB READY_FILE [NVML_INDEX], with CUDA_VISIBLE_DEVICES naming that one GPU.

Why a separate process: the budget must be pinned before llama.cpp starts, the way another tenant's
allocation would be, and stay pinned while it loads.  Plain cudaMalloc (through PyTorch's allocator with
exact-size blocks) rather than managed memory, per the device notes.
"""

from __future__ import annotations

import os
import sys
import time

import pynvml
import torch

INDEX = int(sys.argv[3]) if len(sys.argv) > 3 else 0  # NVML's index of the GPU (CUDA_VISIBLE_DEVICES names it)


def nvml_free() -> int:
    h = pynvml.nvmlDeviceGetHandleByIndex(INDEX)
    try:
        return int(pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2).free)
    except Exception:  # noqa: BLE001
        return int(pynvml.nvmlDeviceGetMemoryInfo(h).free)


def main() -> None:
    target = int(float(sys.argv[1]) * (1 << 20))
    ready = sys.argv[2]
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:False")
    pynvml.nvmlInit()
    torch.cuda.init()
    torch.empty(1, device="cuda")  # context first, so it is counted
    held = []
    for _ in range(40):
        excess = nvml_free() - target
        if abs(excess) < (2 << 20):
            break
        if excess > 0:
            n = max(excess - (1 << 20), 1 << 20) if excess > (4 << 20) else excess
            held.append(torch.cuda.caching_allocator_alloc(int(n) // (2 << 20) * (2 << 20) or (2 << 20)))
        else:
            if not held:
                break
            torch.cuda.caching_allocator_delete(held.pop())
            torch.cuda.empty_cache()
    with open(ready, "w") as fh:
        fh.write(str(nvml_free()))
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
