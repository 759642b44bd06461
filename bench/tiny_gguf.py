"""Tiny random-weight GGUF models that both our runtime and llama.cpp can load.

Llama, Qwen 2 and Qwen 3 checkpoints cannot be downloaded in tests, so each architecture is checked on a
model of a few layers with random weights, written here with llama.cpp's metadata keys and tensor names.
Benchmarks use the Gemma 3 one where only the code path matters (`m3 bench bank` fills a large bank,
`m3 bench soak` writes the memories of its events).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, TokenType
from gguf.quants import quantize

ARCHS = ("llama", "qwen2", "qwen3", "gemma3")


@dataclass(frozen=True)
class TinySpec:
    n_layer: int
    d_model: int
    n_head: int
    n_kv_head: int
    head_dim: int
    ffn_dim: int
    rope_base: float
    norm_eps: float
    context_length: int = 512
    tied: bool = True
    sliding_window: int | None = None
    qtype: str = "F32"  # "F32" or "Q8_0" (the block weights; embeddings and norms stay F32)
    architecture: str | None = None  # general.architecture written, if not the arch itself (error tests)
    out_gain: float = 4.0  # scale of what each attention / MLP adds to the residual stream


# GQA everywhere (4 query heads over 2 KV heads). Llama has an untied output head; Qwen 3 and Gemma 3 have
# head_dim * n_head != d_model, as the real ones do; Gemma 3 needs six layers for llama.cpp's hard-coded
# "every sixth layer is global" to give it one global layer, and a window small enough to be crossed.
DEFAULTS: dict[str, TinySpec] = {
    "llama": TinySpec(2, 128, 4, 2, 32, 256, 10_000.0, 1e-5, tied=False),
    "qwen2": TinySpec(2, 128, 4, 2, 32, 256, 1_000_000.0, 1e-6),
    "qwen3": TinySpec(2, 64, 4, 2, 32, 128, 1_000_000.0, 1e-6),
    "gemma3": TinySpec(6, 64, 4, 2, 32, 128, 1_000_000.0, 1e-6, sliding_window=8),
}

N_WORDS = 41  # 3 specials + 256 byte tokens + 41 words = a vocabulary of 300


def _vocab() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [TokenType.BYTE] * 256
    tokens += [f"\u2581w{i}" for i in range(N_WORDS)]
    types += [TokenType.NORMAL] * N_WORDS
    scores = [0.0] * (3 + 256) + [-float(i) for i in range(N_WORDS)]
    return tokens, scores, [int(t) for t in types]


def vocab_size() -> int:
    return len(_vocab()[0])


def write_tiny_gguf(path: str | Path, arch: str, seed: int = 0, **overrides: object) -> Path:
    """Write a tiny random `arch` model to `path`; `overrides` replace fields of its TinySpec."""
    if arch not in DEFAULTS:
        raise ValueError(f"no tiny layout for {arch!r}; choose one of {ARCHS}")
    spec = replace(DEFAULTS[arch], **overrides)
    path = Path(path)
    rng = np.random.default_rng(seed)
    name = spec.architecture or arch
    tokens, scores, types = _vocab()
    vocab = len(tokens)
    d, hd = spec.d_model, spec.head_dim

    w = GGUFWriter(path, name)
    w.add_name(f"tiny-{arch}")
    w.add_context_length(spec.context_length)
    w.add_embedding_length(d)
    w.add_block_count(spec.n_layer)
    w.add_feed_forward_length(spec.ffn_dim)
    w.add_head_count(spec.n_head)
    w.add_head_count_kv(spec.n_kv_head)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(spec.rope_base)
    w.add_layer_norm_rms_eps(spec.norm_eps)
    if spec.sliding_window is not None:
        w.add_sliding_window(spec.sliding_window)
    w.add_file_type(0 if spec.qtype == "F32" else 7)  # LLAMA_FTYPE_ALL_F32 = 0, MOSTLY_Q8_0 = 7
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)

    def normal(*shape: int, std: float) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def norm_weight(n: int, center: float = 1.0) -> np.ndarray:  # Gemma's GGUFs store 1 + w: same here
        return (center * (1.0 + rng.standard_normal(n) * 0.1)).astype(np.float32)

    def linear(name: str, n_out: int, n_in: int, gain: float) -> None:
        weight = normal(n_out, n_in, std=gain / np.sqrt(n_in))
        if spec.qtype == "F32":
            w.add_tensor(name, weight)
        else:
            qtype = GGMLQuantizationType[spec.qtype]
            w.add_tensor(name, quantize(weight, qtype), raw_dtype=qtype)

    # Tied heads score a token by its embedding: a large embedding makes the input token win every step
    # (greedy repeats it), so keep embeddings near unit norm and the logits' spread near 2.
    w.add_tensor("token_embd.weight", normal(vocab, d, std=2.0 / np.sqrt(d)))
    for i in range(spec.n_layer):
        b = f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", norm_weight(d))
        # Q and K at full gain so attention is far from uniform and RoPE positions matter
        linear(b + "attn_q.weight", spec.n_head * hd, d, 1.0)
        linear(b + "attn_k.weight", spec.n_kv_head * hd, d, 1.0)
        linear(b + "attn_v.weight", spec.n_kv_head * hd, d, 1.0)
        linear(b + "attn_output.weight", d, spec.n_head * hd, spec.out_gain)
        if arch == "qwen2":
            w.add_tensor(b + "attn_q.bias", normal(spec.n_head * hd, std=0.5))
            w.add_tensor(b + "attn_k.bias", normal(spec.n_kv_head * hd, std=0.5))
            w.add_tensor(b + "attn_v.bias", normal(spec.n_kv_head * hd, std=0.5))
        if arch in ("qwen3", "gemma3"):
            w.add_tensor(b + "attn_q_norm.weight", norm_weight(hd))
            w.add_tensor(b + "attn_k_norm.weight", norm_weight(hd))
        if arch == "gemma3":
            w.add_tensor(b + "post_attention_norm.weight", norm_weight(d, spec.out_gain))
        w.add_tensor(b + "ffn_norm.weight", norm_weight(d))
        linear(b + "ffn_gate.weight", spec.ffn_dim, d, 1.0)
        linear(b + "ffn_up.weight", spec.ffn_dim, d, 1.0)
        linear(b + "ffn_down.weight", d, spec.ffn_dim, spec.out_gain)
        if arch == "gemma3":
            w.add_tensor(b + "post_ffw_norm.weight", norm_weight(d, spec.out_gain))
    w.add_tensor("output_norm.weight", norm_weight(d))
    if not spec.tied:
        w.add_tensor("output.weight", normal(vocab, d, std=2.0 / np.sqrt(d)))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
