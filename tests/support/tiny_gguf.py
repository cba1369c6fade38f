"""Write a tiny but real llama-architecture GGUF model with random weights.

The engine tests must start real llama.cpp (xllamacpp) without downloading weights, so they write their
own model: the llama architecture with every tensor llama.cpp requires, a SentencePiece ("llama")
tokenizer made of the 256 byte tokens plus <unk>/<s>/</s> (byte fallback can encode any text), and a
chat template so `/v1/chat/completions` works. Random weights give nonsense text, which is all a
plumbing test needs. A few hundred kilobytes; written in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


@dataclass(frozen=True)
class TinyLlama:
    """Shape of the generated model; defaults keep the file small and loading instant."""

    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 128
    n_ctx_train: int = 2048
    seed: int = 0

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def _vocab() -> tuple[list[bytes], list[float], list[int]]:
    """<unk>, <s>, </s>, then the 256 byte tokens `<0x00>`..`<0xFF>` SentencePiece uses for fallback."""
    tokens = [b"<unk>", b"<s>", b"</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    for byte in range(256):
        tokens.append(f"<0x{byte:02X}>".encode())
        types.append(gguf.TokenType.BYTE)
    scores = [0.0] * len(tokens)
    return tokens, scores, [int(t) for t in types]


def write_tiny_llama(path: str | Path, shape: TinyLlama | None = None) -> Path:
    """Write the model to `path` and return it."""
    shape = shape or TinyLlama()
    path = Path(path)
    rng = np.random.default_rng(shape.seed)
    tokens, scores, types = _vocab()
    n_vocab = len(tokens)
    kv_dim = shape.n_head_kv * shape.head_dim

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("modeldeploy-tiny-llama")
    writer.add_context_length(shape.n_ctx_train)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_chat_template(CHAT_TEMPLATE)

    def rand(*dims: int) -> np.ndarray:
        return (rng.standard_normal(dims) * 0.02).astype(np.float32)

    # numpy shape is (rows, cols) = GGUF ne reversed, so (n_vocab, n_embd) is llama.cpp's {n_embd, n_vocab}.
    writer.add_tensor("token_embd.weight", rand(n_vocab, shape.n_embd))
    for i in range(shape.n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(shape.n_embd, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", rand(shape.n_embd, shape.n_embd))
        writer.add_tensor(f"blk.{i}.attn_k.weight", rand(kv_dim, shape.n_embd))
        writer.add_tensor(f"blk.{i}.attn_v.weight", rand(kv_dim, shape.n_embd))
        writer.add_tensor(f"blk.{i}.attn_output.weight", rand(shape.n_embd, shape.n_embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(shape.n_embd, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", rand(shape.n_ff, shape.n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", rand(shape.n_ff, shape.n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", rand(shape.n_embd, shape.n_ff))
    writer.add_tensor("output_norm.weight", np.ones(shape.n_embd, dtype=np.float32))
    writer.add_tensor("output.weight", rand(n_vocab, shape.n_embd))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
