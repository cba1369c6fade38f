"""Write GGUF files of several architectures with the `gguf` package, for the auto-NGL tests.

The tensor table is a real model's (names, shapes, ggml types as llama.cpp expects them); the data
section is left as a hole (`truncate`), so even a real-sized file costs a few
hundred kilobytes of disk and milliseconds to write.  The estimator reads only the header and the
tensor table, which is what these files get right.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter

from tests.support.gguf_tables import layer_bytes as table_layer_bytes
from tests.support.gguf_tables import write_tensors_sparse

Q = GGMLQuantizationType
Table = list[tuple[str, tuple[int, ...], Q]]


@dataclass(frozen=True)
class Spec:
    """A model's hyper-parameters; `table()` derives its tensors."""

    arch: str = "llama"
    n_layer: int = 4
    n_embd: int = 512
    n_head: int = 8
    n_head_kv: int = 2
    n_ff: int = 1536
    n_vocab: int = 1000
    head_dim: int | None = None
    tied: bool = False
    qkv_bias: bool = False
    qk_norm: bool = False
    post_norms: bool = False
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    n_shared_ff: int = 0
    n_swa: int = 0
    n_ctx_train: int = 8192
    wtype: Q = Q.Q4_K
    otype: Q = Q.Q6_K
    # deepseek2 (multi-head latent attention)
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    rope_dim: int = 64
    extra_kv: dict[str, Any] = field(default_factory=dict)
    omit_kv: frozenset[str] = frozenset()
    extra_tensors: tuple[tuple[str, tuple[int, ...], Q], ...] = ()

    @property
    def dk(self) -> int:
        return self.head_dim or self.n_embd // self.n_head

    def with_(self, **kw: Any) -> Spec:
        return replace(self, **kw)


def _q(shape: tuple[int, ...], want: Q) -> Q:
    """`want` when the rows are whole blocks of it, F16 otherwise (what converters do)."""
    return want if shape[0] % GGML_QUANT_SIZES[want][0] == 0 else Q.F16


def table(s: Spec) -> Table:
    """(name, ggml shape [ne0, ne1, ...], type) of every tensor, in file order."""
    f32 = Q.F32
    out: Table = [("token_embd.weight", (s.n_embd, s.n_vocab), _q((s.n_embd,), s.otype))]

    def w(name: str, shape: tuple[int, ...]) -> None:
        out.append((name, shape, _q(shape, s.wtype)))

    q_dim, kv_dim = s.n_head * s.dk, s.n_head_kv * s.dk
    for i in range(s.n_layer):
        b = f"blk.{i}."
        out.append((b + "attn_norm.weight", (s.n_embd,), f32))
        if s.arch == "deepseek2":
            nope = s.dk - s.rope_dim
            out.append((b + "attn_q_a_norm.weight", (s.q_lora_rank,), f32))
            out.append((b + "attn_kv_a_norm.weight", (s.kv_lora_rank,), f32))
            w(b + "attn_q_a.weight", (s.n_embd, s.q_lora_rank))
            w(b + "attn_q_b.weight", (s.q_lora_rank, s.n_head * s.dk))
            w(b + "attn_kv_a_mqa.weight", (s.n_embd, s.kv_lora_rank + s.rope_dim))
            w(b + "attn_kv_b.weight", (s.kv_lora_rank, s.n_head * (nope + s.dk)))
            w(b + "attn_output.weight", (s.n_head * s.dk, s.n_embd))
        else:
            w(b + "attn_q.weight", (s.n_embd, q_dim))
            w(b + "attn_k.weight", (s.n_embd, kv_dim))
            w(b + "attn_v.weight", (s.n_embd, kv_dim))
            w(b + "attn_output.weight", (q_dim, s.n_embd))
        if s.qkv_bias:
            out += [(b + "attn_q.bias", (q_dim,), f32), (b + "attn_k.bias", (kv_dim,), f32)]
            out.append((b + "attn_v.bias", (kv_dim,), f32))
        if s.qk_norm:
            out += [(b + "attn_q_norm.weight", (s.dk,), f32), (b + "attn_k_norm.weight", (s.dk,), f32)]
        if s.post_norms:
            out += [(b + "post_attention_norm.weight", (s.n_embd,), f32)]
            out += [(b + "post_ffw_norm.weight", (s.n_embd,), f32)]
        out.append((b + "ffn_norm.weight", (s.n_embd,), f32))
        if s.n_expert and not (s.arch == "deepseek2" and i == 0):
            out.append((b + "ffn_gate_inp.weight", (s.n_embd, s.n_expert), f32))
            w(b + "ffn_gate_exps.weight", (s.n_embd, s.n_ff_exp, s.n_expert))
            w(b + "ffn_up_exps.weight", (s.n_embd, s.n_ff_exp, s.n_expert))
            w(b + "ffn_down_exps.weight", (s.n_ff_exp, s.n_embd, s.n_expert))
            if s.n_shared_ff:
                w(b + "ffn_gate_shexp.weight", (s.n_embd, s.n_shared_ff))
                w(b + "ffn_up_shexp.weight", (s.n_embd, s.n_shared_ff))
                w(b + "ffn_down_shexp.weight", (s.n_shared_ff, s.n_embd))
        else:
            w(b + "ffn_gate.weight", (s.n_embd, s.n_ff))
            w(b + "ffn_up.weight", (s.n_embd, s.n_ff))
            w(b + "ffn_down.weight", (s.n_ff, s.n_embd))
    out.append(("output_norm.weight", (s.n_embd,), f32))
    if not s.tied:
        out.append(("output.weight", (s.n_embd, s.n_vocab), _q((s.n_embd,), s.otype)))
    out += list(s.extra_tensors)
    return out


def layer_bytes(s: Spec) -> list[int]:
    """Sum of ggml_nbytes of each layer's `blk.N.*` tensors, from the spec alone."""
    return table_layer_bytes(table(s), s.n_layer)


def _kv(writer: GGUFWriter, s: Spec) -> None:
    a = s.arch
    values: dict[str, Any] = {
        f"{a}.context_length": s.n_ctx_train,
        f"{a}.embedding_length": s.n_embd,
        f"{a}.block_count": s.n_layer,
        f"{a}.feed_forward_length": s.n_ff,
        f"{a}.attention.head_count": s.n_head,
        f"{a}.attention.head_count_kv": s.n_head_kv,
        f"{a}.rope.dimension_count": s.rope_dim if a == "deepseek2" else s.dk,
    }
    if s.head_dim:
        values[f"{a}.attention.key_length"] = s.dk
        values[f"{a}.attention.value_length"] = s.dk
    if s.n_expert:
        values[f"{a}.expert_count"] = s.n_expert
        values[f"{a}.expert_used_count"] = s.n_expert_used
        values[f"{a}.expert_feed_forward_length"] = s.n_ff_exp
    if s.n_shared_ff:
        values[f"{a}.expert_shared_feed_forward_length"] = s.n_shared_ff
    if s.n_swa:
        values[f"{a}.attention.sliding_window"] = s.n_swa
    if s.arch == "deepseek2":
        values[f"{a}.attention.q_lora_rank"] = s.q_lora_rank
        values[f"{a}.attention.kv_lora_rank"] = s.kv_lora_rank
    values.update(s.extra_kv)
    for key, value in values.items():
        if key in s.omit_kv:
            continue
        if isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, list):
            writer.add_array(key, value)
        else:
            writer.add_uint32(key, int(value))
    writer.add_float32(f"{a}.attention.layer_norm_rms_epsilon", 1e-6)


def write(path: str | Path, s: Spec) -> Path:
    """Write the model; the data section is a hole (zeros when read)."""
    path = Path(path)
    writer = GGUFWriter(str(path), s.arch)
    writer.add_name(f"ngl-test-{s.arch}-{s.n_layer}L")
    writer.add_file_type(15)
    _kv(writer, s)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}".encode() for i in range(s.n_vocab)])
    return write_tensors_sparse(writer, path, table(s))


# The architectures the tests cover, small but with each one's peculiarities.
SPECS: dict[str, Spec] = {
    "llama": Spec(),
    "llama-tied-q8": Spec(tied=True, wtype=Q.Q8_0, otype=Q.Q8_0, n_layer=6),
    "qwen2": Spec(arch="qwen2", qkv_bias=True, n_layer=5, wtype=Q.Q5_K),
    "qwen3": Spec(arch="qwen3", qk_norm=True, head_dim=128, n_head=8, n_head_kv=4, n_layer=7, wtype=Q.Q6_K),
    "gemma2": Spec(arch="gemma2", head_dim=256, n_head=4, n_head_kv=2, tied=True, post_norms=True, n_swa=1024),
    "gemma3": Spec(
        arch="gemma3", head_dim=256, n_head=4, n_head_kv=2, tied=True, qk_norm=True, post_norms=True, n_swa=512,
        n_layer=12, wtype=Q.IQ4_XS,
    ),
    "qwen3moe": Spec(
        arch="qwen3moe", qk_norm=True, head_dim=128, n_head=8, n_head_kv=4, n_expert=16, n_expert_used=4,
        n_ff_exp=256, n_layer=6,
    ),
    "mixtral": Spec(arch="llama", n_expert=8, n_expert_used=2, n_ff_exp=1536, n_layer=4, wtype=Q.Q4_0),
    "deepseek2": Spec(
        arch="deepseek2", n_layer=4, n_head=8, n_head_kv=8, head_dim=192, rope_dim=64, q_lora_rank=256,
        kv_lora_rank=256, n_expert=16, n_expert_used=4, n_ff_exp=256, n_shared_ff=512, wtype=Q.Q8_0,
    ),
    "phi3-f16": Spec(arch="phi3", n_layer=3, wtype=Q.F16, otype=Q.F16),
    "unknown-arch": Spec(arch="futurenet", n_layer=3),
}  # fmt: skip
