"""Separate vision projector (mmproj) GGUFs for the auto-NGL tests and the GPU validation.

The real projectors' tensor tables and clip keys (what llama.cpp's mtmd loads), data section a hole:
LLaVA-1.5's CLIP ViT-L/14-336 and Gemma 3's SigLIP at 896 px, measured on an H200
(docs/auto-ngl-validation.md), so the unit tests size exactly the files that ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gguf import GGMLQuantizationType, GGUFWriter

from tests.support.gguf_tables import write_tensors_sparse

Q = GGMLQuantizationType


@dataclass(frozen=True)
class Projector:
    """A separate vision projector (mmproj) GGUF: a ViT encoder and the projection into the LLM."""

    n_layer: int
    n_embd: int
    n_head: int
    n_ff: int
    image_size: int
    patch_size: int
    proj_dim: int  # the LLM's n_embd
    projector_type: str = "mlp"


# LLaVA-1.5's CLIP ViT-L/14 at 336 px (23 of 24 blocks, as its converter keeps) into a 4096-wide LLM, and
# Gemma 3's SigLIP-so400m at 896 px (27 blocks, 4,096 patches pooled 4 x 4 to 256 image tokens) with its
# projection into the same 4096-wide LLM: a vision graph 50 times the LLaVA one (attention over 4,096
# patches), so the projector's constants are not fitted to one small encoder.
PROJECTORS: dict[str, Projector] = {
    "llava-clip-l-336": Projector(23, 1024, 16, 4096, 336, 14, 4096),
    "gemma3-siglip-896": Projector(27, 1152, 16, 4304, 896, 14, 4096, projector_type="gemma3"),
}


def projector_table(p: Projector) -> list[tuple[str, tuple[int, ...], Q]]:
    """The clip tensor table llama.cpp's mtmd loads for projector type "mlp" (CLIP: class token, pre-norm, a
    two-layer MLP) or "gemma3" (SigLIP: no class token, patch bias, post-norm, a soft-embedding norm and one
    projection); f16 weights, f32 norms/biases."""
    f16, f32 = Q.F16, Q.F32
    siglip = p.projector_type == "gemma3"
    n_pos = (p.image_size // p.patch_size) ** 2 + (0 if siglip else 1)
    emb = f32 if siglip else f16  # Gemma 3's converter keeps the embeddings in f32 (CUDA's add needs it)
    out: list[tuple[str, tuple[int, ...], Q]] = [] if siglip else [("v.class_embd", (p.n_embd,), f32)]
    out += [
        ("v.patch_embd.weight", (p.patch_size, p.patch_size, 3, p.n_embd), emb),
        ("v.position_embd.weight", (p.n_embd, n_pos), emb),
    ]
    if siglip:
        out += [("v.patch_embd.bias", (p.n_embd,), f32)]
    else:
        out += [("v.pre_ln.weight", (p.n_embd,), f32), ("v.pre_ln.bias", (p.n_embd,), f32)]
    for i in range(p.n_layer):
        b = f"v.blk.{i}."
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            out += [(b + name + ".weight", (p.n_embd, p.n_embd), f16), (b + name + ".bias", (p.n_embd,), f32)]
        for name in ("ln1", "ln2"):
            out += [(b + name + ".weight", (p.n_embd,), f32), (b + name + ".bias", (p.n_embd,), f32)]
        out += [(b + "ffn_up.weight", (p.n_embd, p.n_ff), f16), (b + "ffn_up.bias", (p.n_ff,), f32)]
        out += [(b + "ffn_down.weight", (p.n_ff, p.n_embd), f16), (b + "ffn_down.bias", (p.n_embd,), f32)]
    if siglip:
        out += [("v.post_ln.weight", (p.n_embd,), f32), ("v.post_ln.bias", (p.n_embd,), f32)]
        out += [("mm.soft_emb_norm.weight", (p.n_embd,), f32)]
        return out + [("mm.input_projection.weight", (p.proj_dim, p.n_embd), f16)]
    out += [("mm.0.weight", (p.n_embd, p.proj_dim), f16), ("mm.0.bias", (p.proj_dim,), f32)]
    out += [("mm.2.weight", (p.proj_dim, p.proj_dim), f16), ("mm.2.bias", (p.proj_dim,), f32)]
    return out


def write_projector(path: Path, p: Projector) -> Path:
    """Write an mmproj GGUF (data section a hole) with the clip keys mtmd requires."""
    path = Path(path)
    writer = GGUFWriter(path, "clip")
    writer.add_name("modeldeploy-mmproj")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_string("clip.projector_type", p.projector_type)
    writer.add_bool("clip.use_gelu", p.projector_type == "gemma3")
    v = "clip.vision."
    for key, value in (
        ("embedding_length", p.n_embd), ("attention.head_count", p.n_head), ("feed_forward_length", p.n_ff),
        ("block_count", p.n_layer), ("projection_dim", 768), ("image_size", p.image_size),
        ("patch_size", p.patch_size),
    ):  # fmt: skip
        writer.add_uint32(v + key, value)
    writer.add_float32(v + "attention.layer_norm_epsilon", 1e-6 if p.projector_type == "gemma3" else 1e-5)
    if p.projector_type == "gemma3":
        writer.add_array(v + "image_mean", [0.5, 0.5, 0.5])
        writer.add_array(v + "image_std", [0.5, 0.5, 0.5])
    else:
        writer.add_array(v + "image_mean", [0.48145466, 0.4578275, 0.40821073])
        writer.add_array(v + "image_std", [0.26862954, 0.26130258, 0.27577711])
    return write_tensors_sparse(writer, path, projector_table(p))
