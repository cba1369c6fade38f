"""How much of a GGUF model fits on one node's GPUs, to prefer the nodes where auto-NGL offloads most.

Selection cannot read the GGUF header (the file is on the node, read by the auto-NGL init container,
docs/ngl.md), so it compares nodes by the share of the weights their GPUs hold: parameters
(`sizeInBillions`) times the bits per weight of the file's quantisation (llama.cpp's
`tools/quantize/README.md` table), against the GPUs' memory with auto-NGL's 10 % margin. The share only
orders the nodes; the init container still decides the layers where the pod lands.
"""

from __future__ import annotations

# Bits per weight of llama.cpp's file types (tools/quantize/README.md, measured on Llama-3-8B).
BITS_PER_WEIGHT: dict[str, float] = {
    "Q2_K": 2.96,
    "Q3_K_S": 3.41,
    "Q3_K_M": 3.74,
    "Q3_K_L": 4.03,
    "Q4_0": 4.34,
    "Q4_K_S": 4.37,
    "Q4_K_M": 4.58,
    "Q5_0": 5.21,
    "Q5_K_S": 5.21,
    "Q5_K_M": 5.33,
    "Q6_K": 6.14,
    "Q8_0": 7.96,
    "F16": 16.0,
    "BF16": 16.0,
    "F32": 32.0,
}
GPU_MARGIN = 0.9


def gguf_bytes(params_b: float, quantization: str | None) -> int | None:
    """The file's size from the parameters and its quantisation (None: an unknown quantisation)."""
    bits = BITS_PER_WEIGHT.get((quantization or "").upper())
    return None if bits is None else int(params_b * 1e9 * bits / 8)


def share_on_gpu(weights: int, gpu_mib: int, gpus: int) -> float:
    """The share of the weights `gpus` GPUs of `gpu_mib` hold, 0..1."""
    room = gpu_mib * 1024 * 1024 * gpus * GPU_MARGIN
    return min(1.0, room / weights) if weights else 1.0
