"""Llama family (Llama 2/3, Mistral-style GGUFs): RMSNorm, SwiGLU, RoPE on adjacent pairs, GQA."""

from __future__ import annotations

from engine.models.config import ModelConfig, config_from_gguf
from engine.models.gguf_file import GGUFFile


def llama_config(f: GGUFFile, vocab_size: int) -> ModelConfig:
    # llama.cpp's converter permutes Q/K so that rotated pairs are adjacent ("norm" RoPE in llama.cpp)
    return config_from_gguf(f, vocab_size, rope_base=10_000.0, context_length=4096, rope_style="gptj")
