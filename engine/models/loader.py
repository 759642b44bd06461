"""Build a Transformer from a GGUF file: pick the family's config, map tensor names, assert shapes."""

from __future__ import annotations

from collections.abc import Callable

import torch

from engine.errors import ModelLoadError, UnsupportedModelError
from engine.models import gemma3, llama, qwen
from engine.models.config import ModelConfig
from engine.models.gguf_file import GGUFFile
from engine.models.transformer import Transformer

ARCHITECTURES: dict[str, Callable[[GGUFFile, int], ModelConfig]] = {
    "gemma3": gemma3.gemma3_config,
    "llama": llama.llama_config,
    "qwen2": qwen.qwen2_config,
    "qwen3": qwen.qwen3_config,
}

# our parameter name (per block, "{i}" is the layer) -> GGUF tensor name
_BLOCK_TENSORS = {
    "attn_norm.weight": "attn_norm.weight",
    "attn.wq.weight": "attn_q.weight",
    "attn.wk.weight": "attn_k.weight",
    "attn.wv.weight": "attn_v.weight",
    "attn.wq.bias": "attn_q.bias",
    "attn.wk.bias": "attn_k.bias",
    "attn.wv.bias": "attn_v.bias",
    "attn.wo.weight": "attn_output.weight",
    "attn.q_norm.weight": "attn_q_norm.weight",
    "attn.k_norm.weight": "attn_k_norm.weight",
    "post_attn_norm.weight": "post_attention_norm.weight",
    "mlp_norm.weight": "ffn_norm.weight",
    "mlp.gate.weight": "ffn_gate.weight",
    "mlp.up.weight": "ffn_up.weight",
    "mlp.down.weight": "ffn_down.weight",
    "post_mlp_norm.weight": "post_ffw_norm.weight",
}


def model_config(f: GGUFFile) -> ModelConfig:
    arch = f.architecture
    if arch not in ARCHITECTURES:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise UnsupportedModelError(f"Architecture '{arch}' is not supported (supported: {supported}).")
    vocab = f.shape("token_embd.weight")[0]
    return ARCHITECTURES[arch](f, vocab)


def load_transformer(f: GGUFFile, dtype: torch.dtype, device: torch.device) -> Transformer:
    config = model_config(f)
    with torch.device("meta"):
        model = Transformer(config)
    names = f.tensor_names()
    state: dict[str, torch.Tensor] = {
        "embed.weight": f.tensor("token_embd.weight", dtype),
        "norm.weight": f.tensor("output_norm.weight", dtype),
    }
    if not config.tied_embeddings:
        state["lm_head.weight"] = f.tensor("output.weight", dtype)
    for i in range(config.n_layer):
        for ours, theirs in _BLOCK_TENSORS.items():
            if f"blk.{i}.{theirs}" in names:
                state[f"blocks.{i}.{ours}"] = f.tensor(f"blk.{i}.{theirs}", dtype)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ModelLoadError(f"{f.path} lacks tensors the {config.arch} architecture needs: {missing[:3]}.")
    for name, tensor in state.items():
        want = tuple(expected[name].shape)
        if tuple(tensor.shape) != want:
            got = tuple(tensor.shape)
            raise ModelLoadError(f"Tensor {name} in {f.path} has shape {got}, expected {want}.")
    model.load_state_dict({k: t.to(device) for k, t in state.items()}, assign=True)
    return model.eval()
