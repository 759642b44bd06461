"""Llama family (Llama 2/3, Mistral-style GGUFs): RMSNorm, SwiGLU, RoPE on adjacent pairs, GQA."""

from __future__ import annotations

from engine.gguf_file import GGUFFile
from engine.models.config import ModelConfig


def config_from_gguf(f: GGUFFile, vocab_size: int) -> ModelConfig:
    n_head = int(f.require("attention.head_count"))
    d_model = int(f.require("embedding_length"))
    return ModelConfig(
        arch="llama",
        n_layer=int(f.require("block_count")),
        d_model=d_model,
        n_head=n_head,
        n_kv_head=int(f.get("attention.head_count_kv", n_head)),
        head_dim=int(f.get("attention.key_length", d_model // n_head)),
        ffn_dim=int(f.require("feed_forward_length")),
        vocab_size=vocab_size,
        norm_eps=float(f.require("attention.layer_norm_rms_epsilon")),
        rope_base=float(f.get("rope.freq_base", 10_000.0)),
        rope_style="gptj",  # llama.cpp's converter permutes Q/K so that pairs are adjacent
        activation="silu",
        tied_embeddings="output.weight" not in f.tensor_names(),
        context_length=int(f.get("context_length", 4096)),
    )
