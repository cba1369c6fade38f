"""Write real-shaped GGUF models with the `gguf` package: the tensor table of a real model, zero weights.

Why: auto-NGL is judged against llama.cpp loading real shapes (layer sizes, vocabularies, GQA, MoE,
sliding windows), and the weights' values do not change memory use.  The data section is left as a
hole (`truncate`), so a 20 GB model costs a few MB of disk and loads (zeros are valid in every ggml
quantisation).  The table writer is shared with the unit tests (tests/support/gguf_tables.py); the GPU
validation uses the shapes in SHAPES and a tokenizer copied from one of llama.cpp's vocab-only GGUFs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: tests.support is shared
from tests.support.gguf_projectors import PROJECTORS, Projector, projector_table, write_projector  # noqa: E402,F401
from tests.support.gguf_tables import layer_bytes as table_layer_bytes  # noqa: E402
from tests.support.gguf_tables import write_tensors_sparse  # noqa: E402

Q = GGMLQuantizationType


@dataclass(frozen=True)
class Shape:
    """The hyper-parameters that decide a model's tensor table."""

    arch: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int
    head_dim: int | None = None
    tied: bool = False
    qkv_bias: bool = False
    qk_norm: bool = False
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    n_swa: int = 0
    post_norms: bool = False
    weight_type: Q = Q.Q4_K
    output_type: Q = Q.Q6_K
    n_ctx_train: int = 131072
    # deepseek2 with multi-head latent attention (the layout of current converters: k_b/v_b split)
    kv_lora_rank: int = 0
    rope_dim: int = 64
    head_dim_v: int = 0
    n_dense_lead: int = 0
    n_shared_exp: int = 0
    extra_kv: dict[str, Any] = field(default_factory=dict)

    @property
    def dk(self) -> int:
        return self.head_dim or self.n_embd // self.n_head


# Real models' shapes (the public configs); all Q4_K with a Q6_K output, as the Q4_K_M files roughly are.
SHAPES: dict[str, Shape] = {
    "llama-1b": Shape("llama", 16, 2048, 32, 8, 8192, 128256, head_dim=64, tied=True),
    "llama-8b": Shape("llama", 32, 4096, 32, 8, 14336, 128256),
    "qwen2-14b": Shape("qwen2", 48, 5120, 40, 8, 13824, 152064, qkv_bias=True, n_ctx_train=32768),
    "qwen3-32b": Shape("qwen3", 64, 5120, 64, 8, 25600, 151936, head_dim=128, qk_norm=True, n_ctx_train=40960),
    "qwen3moe-30b-a3b": Shape(
        "qwen3moe", 48, 2048, 32, 4, 6144, 151936, head_dim=128, qk_norm=True,
        n_expert=128, n_expert_used=8, n_ff_exp=768, n_ctx_train=40960,
    ),
    "llama-70b": Shape("llama", 80, 8192, 64, 8, 28672, 128256),
    "gemma3-12b": Shape(
        "gemma3", 48, 3840, 16, 8, 15360, 262144, head_dim=256, tied=True, qk_norm=True,
        n_swa=1024, post_norms=True,
    ),
    # DeepSeek-V2-Lite (16B, 64 experts, MLA): K heads 192 = 128 + rope 64, V heads 128, latent 512.
    "deepseek2-16b": Shape(
        "deepseek2", 27, 2048, 16, 1, 10944, 102400, head_dim=192, n_expert=64, n_expert_used=6,
        n_ff_exp=1408, kv_lora_rank=512, rope_dim=64, head_dim_v=128, n_dense_lead=1, n_shared_exp=2,
        n_ctx_train=163840,
    ),
}  # fmt: skip


def _q(shape: tuple[int, ...], want: Q) -> Q:
    """`want` when the rows are whole blocks of it, Q8_0 otherwise (llama-quantize's fallback)."""
    from gguf import GGML_QUANT_SIZES

    return want if shape[0] % GGML_QUANT_SIZES[want][0] == 0 else Q.Q8_0


def _mla_attention(s: Shape, b: str) -> list[tuple[str, tuple[int, ...], Q]]:
    """deepseek2's attention with the latent cache: q, the joint KV down-projection, k_b/v_b per head."""
    nope = s.dk - s.rope_dim
    rows = [
        (b + "attn_q.weight", (s.n_embd, s.n_head * s.dk)),
        (b + "attn_kv_a_mqa.weight", (s.n_embd, s.kv_lora_rank + s.rope_dim)),
        (b + "attn_k_b.weight", (nope, s.kv_lora_rank, s.n_head)),
        (b + "attn_v_b.weight", (s.kv_lora_rank, s.head_dim_v, s.n_head)),
        (b + "attn_output.weight", (s.n_head * s.head_dim_v, s.n_embd)),
    ]
    out = [(b + "attn_norm.weight", (s.n_embd,), Q.F32), (b + "attn_kv_a_norm.weight", (s.kv_lora_rank,), Q.F32)]
    return out + [(n, sh, _q(sh, s.weight_type)) for n, sh in rows]


def tensor_table(s: Shape) -> list[tuple[str, tuple[int, ...], Q]]:
    """(name, ggml shape [ne0, ne1, ...], type) for every tensor of the model, in file order."""
    w, f32 = s.weight_type, Q.F32
    q_dim, kv_dim = s.n_head * s.dk, s.n_head_kv * s.dk
    out: list[tuple[str, tuple[int, ...], Q]] = [("token_embd.weight", (s.n_embd, s.n_vocab), s.output_type)]
    for i in range(s.n_layer):
        b = f"blk.{i}."
        if s.kv_lora_rank:
            out += _mla_attention(s, b)
            out.append((b + "ffn_norm.weight", (s.n_embd,), f32))
            if i < s.n_dense_lead:
                up = (s.n_embd, s.n_ff)
                dense = [("ffn_gate", up), ("ffn_up", up), ("ffn_down", (s.n_ff, s.n_embd))]
                out += [(b + n + ".weight", sh, _q(sh, w)) for n, sh in dense]
                continue
            sh_ff = s.n_ff_exp * s.n_shared_exp
            moe = [
                ("ffn_gate_exps", (s.n_embd, s.n_ff_exp, s.n_expert)),
                ("ffn_up_exps", (s.n_embd, s.n_ff_exp, s.n_expert)),
                ("ffn_down_exps", (s.n_ff_exp, s.n_embd, s.n_expert)),
                ("ffn_gate_shexp", (s.n_embd, sh_ff)),
                ("ffn_up_shexp", (s.n_embd, sh_ff)),
                ("ffn_down_shexp", (sh_ff, s.n_embd)),
            ]
            out.append((b + "ffn_gate_inp.weight", (s.n_embd, s.n_expert), f32))
            out += [(b + n + ".weight", sh, _q(sh, w)) for n, sh in moe]
            continue
        out += [
            (b + "attn_norm.weight", (s.n_embd,), f32),
            (b + "attn_q.weight", (s.n_embd, q_dim), w),
            (b + "attn_k.weight", (s.n_embd, kv_dim), w),
            (b + "attn_v.weight", (s.n_embd, kv_dim), w),
            (b + "attn_output.weight", (q_dim, s.n_embd), w),
        ]
        if s.qkv_bias:
            out += [(b + "attn_q.bias", (q_dim,), f32), (b + "attn_k.bias", (kv_dim,), f32)]
            out += [(b + "attn_v.bias", (kv_dim,), f32)]
        if s.qk_norm:
            out += [(b + "attn_q_norm.weight", (s.dk,), f32), (b + "attn_k_norm.weight", (s.dk,), f32)]
        if s.post_norms:
            out += [(b + "post_attention_norm.weight", (s.n_embd,), f32)]
            out += [(b + "post_ffw_norm.weight", (s.n_embd,), f32)]
        out.append((b + "ffn_norm.weight", (s.n_embd,), f32))
        if s.n_expert:
            out += [
                (b + "ffn_gate_inp.weight", (s.n_embd, s.n_expert), f32),
                (b + "ffn_gate_exps.weight", (s.n_embd, s.n_ff_exp, s.n_expert), w),
                (b + "ffn_up_exps.weight", (s.n_embd, s.n_ff_exp, s.n_expert), w),
                (b + "ffn_down_exps.weight", (s.n_ff_exp, s.n_embd, s.n_expert), w),
            ]
        else:
            out += [
                (b + "ffn_gate.weight", (s.n_embd, s.n_ff), w),
                (b + "ffn_up.weight", (s.n_embd, s.n_ff), w),
                (b + "ffn_down.weight", (s.n_ff, s.n_embd), w),
            ]
    out.append(("output_norm.weight", (s.n_embd,), f32))
    if not s.tied:
        out.append(("output.weight", (s.n_embd, s.n_vocab), s.output_type))
    return out


def _copy_tokenizer(writer: GGUFWriter, vocab_path: Path) -> int:
    """Copy every tokenizer.* key of a vocab-only GGUF; return the token count."""
    reader = GGUFReader(vocab_path)
    n_tokens = 0
    for key, fld in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = fld.types[0]
        value = fld.contents()
        sub = fld.types[1] if vtype == GGUFValueType.ARRAY and len(fld.types) > 1 else None
        writer.add_key_value(key, value, vtype, sub_type=sub)
        if key == "tokenizer.ggml.tokens":
            n_tokens = len(value)
    return n_tokens


def _tiny_tokenizer(writer: GGUFWriter, n_vocab: int) -> None:
    """A tokenizer good enough for the header (tests never load it in llama.cpp)."""
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}".encode() for i in range(n_vocab)])
    writer.add_token_types([1] * n_vocab)


def write_model(path: Path, s: Shape, *, vocab: Path | None = None) -> Path:
    """Write `s` to `path` with the data section as a hole.  vocab: a vocab-only GGUF whose tokenizer
    (and vocab size) is copied."""
    path = Path(path)
    writer = GGUFWriter(path, s.arch)
    n_vocab = s.n_vocab
    if vocab is not None:
        n_vocab = _copy_tokenizer(writer, vocab)
        s = Shape(**{**s.__dict__, "n_vocab": n_vocab})
    else:
        _tiny_tokenizer(writer, n_vocab)
    a = s.arch
    writer.add_name(f"modeldeploy-{a}-{s.n_layer}L")
    writer.add_file_type(15)  # Q4_K_M
    writer.add_uint32(f"{a}.context_length", s.n_ctx_train)
    writer.add_uint32(f"{a}.embedding_length", s.n_embd)
    writer.add_uint32(f"{a}.block_count", s.n_layer)
    writer.add_uint32(f"{a}.feed_forward_length", s.n_ff)
    writer.add_uint32(f"{a}.attention.head_count", s.n_head)
    writer.add_uint32(f"{a}.attention.head_count_kv", s.n_head_kv)
    writer.add_float32(f"{a}.attention.layer_norm_rms_epsilon", 1e-6)
    writer.add_float32(f"{a}.rope.freq_base", 1e6)
    writer.add_uint32(f"{a}.rope.dimension_count", s.rope_dim if s.kv_lora_rank else s.dk)
    if s.kv_lora_rank:
        # MLA as current converters write it: the cache holds the latent (K = latent + rope, V = latent).
        writer.add_uint32(f"{a}.attention.key_length", s.kv_lora_rank + s.rope_dim)
        writer.add_uint32(f"{a}.attention.value_length", s.kv_lora_rank)
        writer.add_uint32(f"{a}.attention.key_length_mla", s.dk)
        writer.add_uint32(f"{a}.attention.value_length_mla", s.head_dim_v)
        writer.add_uint32(f"{a}.attention.kv_lora_rank", s.kv_lora_rank)
        writer.add_uint32(f"{a}.leading_dense_block_count", s.n_dense_lead)
        writer.add_uint32(f"{a}.expert_shared_count", s.n_shared_exp)
        writer.add_float32(f"{a}.expert_weights_scale", 1.0)
    elif s.head_dim:
        writer.add_uint32(f"{a}.attention.key_length", s.dk)
        writer.add_uint32(f"{a}.attention.value_length", s.dk)
    if s.n_expert:
        writer.add_uint32(f"{a}.expert_count", s.n_expert)
        writer.add_uint32(f"{a}.expert_used_count", s.n_expert_used)
        writer.add_uint32(f"{a}.expert_feed_forward_length", s.n_ff_exp)
    if s.n_swa:
        writer.add_uint32(f"{a}.attention.sliding_window", s.n_swa)
    for k, v in s.extra_kv.items():
        if isinstance(v, int):
            writer.add_uint32(k, v)
        else:
            writer.add_string(k, str(v))
    return write_tensors_sparse(writer, path, tensor_table(s))


def layer_bytes(s: Shape) -> list[int]:
    """Sum of ggml_nbytes per repeating layer, straight from the shape (the tests' reference)."""
    return table_layer_bytes(tensor_table(s), s.n_layer)


if __name__ == "__main__":  # pragma: no cover - used by the device script
    import argparse

    p = argparse.ArgumentParser(description="write a real-shaped sparse GGUF")
    p.add_argument("shape", choices=sorted(SHAPES))
    p.add_argument("output")
    p.add_argument("--vocab", default=None)
    args = p.parse_args()
    out = write_model(Path(args.output), SHAPES[args.shape], vocab=Path(args.vocab) if args.vocab else None)
    print(out, out.stat().st_size)
