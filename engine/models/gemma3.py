"""Gemma 3: sliding-window and global layers with their own RoPE bases, QK-norm, four norms per block."""

from __future__ import annotations

import math

from engine.models.config import ModelConfig, config_from_gguf
from engine.models.gguf_file import GGUFFile

SLIDING_WINDOW_PATTERN = 6  # every sixth layer is global; llama.cpp hard-codes the same for gemma3
LOCAL_ROPE_BASE = 10_000.0


def gemma3_config(f: GGUFFile, vocab_size: int) -> ModelConfig:
    n_layer = int(f.require("block_count"))
    pattern = int(f.get("attention.sliding_window_pattern", SLIDING_WINDOW_PATTERN))
    return config_from_gguf(
        f,
        vocab_size,
        rope_base=1_000_000.0,
        context_length=32768,
        rope_base_local=LOCAL_ROPE_BASE,
        sliding_window=int(f.require("attention.sliding_window")),
        local_layers=tuple((i + 1) % pattern != 0 for i in range(n_layer)),
        qk_norm=True,
        sandwich_norms=True,
        embed_scale=math.sqrt(int(f.require("embedding_length"))),
        activation="gelu_tanh",
    )
