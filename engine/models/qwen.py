"""Qwen 2 (biases on Q/K/V) and Qwen 3 (QK-norm, no biases): SwiGLU, RoPE on halves, GQA."""

from __future__ import annotations

from engine.models.config import ModelConfig, config_from_gguf
from engine.models.gguf_file import GGUFFile


def qwen2_config(f: GGUFFile, vocab_size: int) -> ModelConfig:
    return config_from_gguf(f, vocab_size, rope_base=1_000_000.0, context_length=32768, qkv_bias=True)


def qwen3_config(f: GGUFFile, vocab_size: int) -> ModelConfig:
    return config_from_gguf(f, vocab_size, rope_base=1_000_000.0, context_length=32768, qk_norm=True)
