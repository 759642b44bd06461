"""A tiny random-weight Gemma 3 GGUF (six layers, 2 KV heads of 32 dims): it writes real memories through
the real engine path in a fraction of a millisecond each, so a benchmark can fill a large bank quickly.
A trimmed copy of tests/tiny_gguf.py's Gemma 3 layout (benchmarks do not import the tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFWriter, TokenType

N_LAYER, D_MODEL, N_HEAD, N_KV_HEAD, HEAD_DIM, FFN_DIM = 6, 64, 4, 2, 32, 128
N_WORDS = 41  # 3 specials + 256 byte tokens + 41 words: a vocabulary of 300
OUT_GAIN = 4.0


def _vocab() -> tuple[list[str], list[float], list[int]]:
    tokens = [
        "<unk>",
        "<s>",
        "</s>",
        *(f"<0x{b:02X}>" for b in range(256)),
        *(f"\u2581w{i}" for i in range(N_WORDS)),
    ]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256
    types += [TokenType.NORMAL] * N_WORDS
    scores = [0.0] * (3 + 256) + [-float(i) for i in range(N_WORDS)]
    return tokens, scores, [int(t) for t in types]


def write_tiny_gemma3(path: str | Path, seed: int = 0) -> Path:
    """Write the tiny random Gemma 3 to `path` (F32 weights, sliding window 8, context 512)."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    tokens, scores, types = _vocab()
    d, hd = D_MODEL, HEAD_DIM

    w = GGUFWriter(path, "gemma3")
    w.add_name("tiny-gemma3")
    w.add_context_length(512)
    w.add_embedding_length(d)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(FFN_DIM)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_KV_HEAD)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(1_000_000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_sliding_window(8)
    w.add_file_type(0)  # LLAMA_FTYPE_ALL_F32
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

    def norm_weight(n: int, center: float = 1.0) -> np.ndarray:  # Gemma's GGUFs store 1 + w
        return (center * (1.0 + rng.standard_normal(n) * 0.1)).astype(np.float32)

    w.add_tensor("token_embd.weight", normal(len(tokens), d, std=2.0 / np.sqrt(d)))
    for i in range(N_LAYER):
        b = f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", norm_weight(d))
        w.add_tensor(b + "attn_q.weight", normal(N_HEAD * hd, d, std=1 / np.sqrt(d)))
        w.add_tensor(b + "attn_k.weight", normal(N_KV_HEAD * hd, d, std=1 / np.sqrt(d)))
        w.add_tensor(b + "attn_v.weight", normal(N_KV_HEAD * hd, d, std=1 / np.sqrt(d)))
        w.add_tensor(b + "attn_output.weight", normal(d, N_HEAD * hd, std=OUT_GAIN / np.sqrt(N_HEAD * hd)))
        w.add_tensor(b + "attn_q_norm.weight", norm_weight(hd))
        w.add_tensor(b + "attn_k_norm.weight", norm_weight(hd))
        w.add_tensor(b + "post_attention_norm.weight", norm_weight(d, OUT_GAIN))
        w.add_tensor(b + "ffn_norm.weight", norm_weight(d))
        w.add_tensor(b + "ffn_gate.weight", normal(FFN_DIM, d, std=1 / np.sqrt(d)))
        w.add_tensor(b + "ffn_up.weight", normal(FFN_DIM, d, std=1 / np.sqrt(d)))
        w.add_tensor(b + "ffn_down.weight", normal(d, FFN_DIM, std=OUT_GAIN / np.sqrt(FFN_DIM)))
        w.add_tensor(b + "post_ffw_norm.weight", norm_weight(d, OUT_GAIN))
    w.add_tensor("output_norm.weight", norm_weight(d))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
