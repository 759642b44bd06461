"""Qwen 2 (biases on Q/K/V) and Qwen 3 (QK-norm, no biases): SwiGLU, RoPE on halves, GQA."""

from __future__ import annotations

from engine.gguf_file import GGUFFile
from engine.models.config import ModelConfig


def _config(f: GGUFFile, vocab_size: int, arch: str) -> ModelConfig:
    n_head = int(f.require("attention.head_count"))
    d_model = int(f.require("embedding_length"))
    return ModelConfig(
        arch=arch,
        n_layer=int(f.require("block_count")),
        d_model=d_model,
        n_head=n_head,
        n_kv_head=int(f.get("attention.head_count_kv", n_head)),
        head_dim=int(f.get("attention.key_length", d_model // n_head)),
        ffn_dim=int(f.require("feed_forward_length")),
        vocab_size=vocab_size,
        norm_eps=float(f.require("attention.layer_norm_rms_epsilon")),
        rope_base=float(f.get("rope.freq_base", 1_000_000.0)),
        rope_style="neox",
        qk_norm=arch == "qwen3",
        qkv_bias=arch == "qwen2",
        activation="silu",
        tied_embeddings="output.weight" not in f.tensor_names(),
        context_length=int(f.get("context_length", 32768)),
    )


def qwen2_config_from_gguf(f: GGUFFile, vocab_size: int) -> ModelConfig:
    return _config(f, vocab_size, "qwen2")


def qwen3_config_from_gguf(f: GGUFFile, vocab_size: int) -> ModelConfig:
    return _config(f, vocab_size, "qwen3")
