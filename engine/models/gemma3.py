"""Gemma 3: sliding-window and global layers with their own RoPE bases, QK-norm, four norms per block."""

from __future__ import annotations

import math

from engine.gguf_file import GGUFFile
from engine.models.config import ModelConfig

SLIDING_WINDOW_PATTERN = 6  # every sixth layer is global; llama.cpp hard-codes the same for gemma3
LOCAL_ROPE_BASE = 10_000.0


def config_from_gguf(f: GGUFFile, vocab_size: int) -> ModelConfig:
    n_layer = int(f.require("block_count"))
    d_model = int(f.require("embedding_length"))
    pattern = int(f.get("attention.sliding_window_pattern", SLIDING_WINDOW_PATTERN))
    return ModelConfig(
        arch="gemma3",
        n_layer=n_layer,
        d_model=d_model,
        n_head=int(f.require("attention.head_count")),
        n_kv_head=int(f.require("attention.head_count_kv")),
        head_dim=int(f.require("attention.key_length")),
        ffn_dim=int(f.require("feed_forward_length")),
        vocab_size=vocab_size,
        norm_eps=float(f.require("attention.layer_norm_rms_epsilon")),
        rope_base=float(f.get("rope.freq_base", 1_000_000.0)),
        rope_base_local=LOCAL_ROPE_BASE,
        rope_style="neox",
        sliding_window=int(f.require("attention.sliding_window")),
        local_layers=tuple((i + 1) % pattern != 0 for i in range(n_layer)),
        qk_norm=True,
        sandwich_norms=True,
        embed_scale=math.sqrt(d_model),
        activation="gelu_tanh",
        tied_embeddings=True,
        context_length=int(f.get("context_length", 32768)),
    )
