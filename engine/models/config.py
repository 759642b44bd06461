"""The one shape description every supported architecture is reduced to."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelConfig:
    """Sizes and switches of a decoder-only transformer; families differ only in these fields."""

    arch: str
    n_layer: int
    d_model: int
    n_head: int
    n_kv_head: int
    head_dim: int
    ffn_dim: int
    vocab_size: int
    norm_eps: float
    rope_base: float
    rope_base_local: float | None = None  # sliding-window layers' own base (Gemma 3)
    rope_style: str = "neox"  # "neox": rotate halves; "gptj": rotate adjacent pairs (llama.cpp's "norm")
    sliding_window: int | None = None
    local_layers: tuple[bool, ...] = ()  # per layer: does it use the sliding window?
    qk_norm: bool = False
    sandwich_norms: bool = False  # extra norms after attention and MLP (Gemma)
    embed_scale: float = 1.0
    activation: str = "silu"  # "silu" or "gelu_tanh"
    qkv_bias: bool = False
    tied_embeddings: bool = True
    context_length: int = 8192

    def __post_init__(self) -> None:
        if not self.local_layers:
            object.__setattr__(self, "local_layers", (False,) * self.n_layer)
        assert len(self.local_layers) == self.n_layer
        assert self.n_head % self.n_kv_head == 0, "query heads must group evenly over key-value heads"

    @property
    def attn_scale(self) -> float:
        return self.head_dim**-0.5
