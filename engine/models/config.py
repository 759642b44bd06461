"""The one shape description every supported architecture is reduced to."""

from __future__ import annotations

from dataclasses import dataclass

from engine.models.gguf_file import GGUFFile


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


def config_from_gguf(
    f: GGUFFile, vocab_size: int, *, rope_base: float, context_length: int, **family: object
) -> ModelConfig:
    """The fields every family reads the same way from GGUF metadata; `family` sets the rest.

    `rope_base` and `context_length` are the family's defaults for files that omit them.
    """
    n_head = int(f.require("attention.head_count"))
    d_model = int(f.require("embedding_length"))
    return ModelConfig(
        arch=f.architecture,
        n_layer=int(f.require("block_count")),
        d_model=d_model,
        n_head=n_head,
        n_kv_head=int(f.get("attention.head_count_kv", n_head)),
        head_dim=int(f.get("attention.key_length", d_model // n_head)),
        ffn_dim=int(f.require("feed_forward_length")),
        vocab_size=vocab_size,
        norm_eps=float(f.require("attention.layer_norm_rms_epsilon")),
        rope_base=float(f.get("rope.freq_base", rope_base)),
        tied_embeddings="output.weight" not in f.tensor_names(),
        context_length=int(f.get("context_length", context_length)),
        **family,
    )
