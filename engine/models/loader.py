"""Build a Transformer from a GGUF file: pick the family's config, map tensor names, assert shapes."""

from __future__ import annotations

from collections.abc import Callable

import torch

from engine.errors import ModelLoadError, UnsupportedModelError
from engine.models import gemma3, llama, qwen
from engine.models.config import ModelConfig
from engine.models.gguf_file import GGUFFile
from engine.models.quantized import INT4_GROUP, Linear, copy_kind, decode_copy, packed_rows
from engine.models.transformer import Transformer

ARCHITECTURES: dict[str, Callable[[GGUFFile, int], ModelConfig]] = {
    "gemma3": gemma3.gemma3_config,
    "llama": llama.llama_config,
    "qwen2": qwen.qwen2_config,
    "qwen3": qwen.qwen3_config,
}

# our parameter name (per block) -> the GGUF tensors it holds, stacked along the output rows
_BLOCK_TENSORS = {
    "attn_norm.weight": ("attn_norm.weight",),
    "attn.wqkv.weight": ("attn_q.weight", "attn_k.weight", "attn_v.weight"),
    "attn.wqkv.bias": ("attn_q.bias", "attn_k.bias", "attn_v.bias"),
    "attn.wo.weight": ("attn_output.weight",),
    "attn.q_norm.weight": ("attn_q_norm.weight",),
    "attn.k_norm.weight": ("attn_k_norm.weight",),
    "post_attn_norm.weight": ("post_attention_norm.weight",),
    "mlp_norm.weight": ("ffn_norm.weight",),
    "mlp.gate_up.weight": ("ffn_gate.weight", "ffn_up.weight"),
    "mlp.down.weight": ("ffn_down.weight",),
    "post_mlp_norm.weight": ("post_ffw_norm.weight",),
}


# 4-bit GGUF blocks whose values sit on one affine grid per 32 weights: an int4 copy (a bf16 scale and
# zero point per 32) holds them up to bf16 rounding (4x closer than an int8 copy on the default model's Q4_K)
AFFINE_4BIT = {"Q4_0", "Q4_1", "Q4_K"}


def four_bit_linears(f: GGUFFile, config: ModelConfig) -> set[str]:
    """Our linears (module names) whose GGUF tensors are all stored in AFFINE_4BIT blocks: they get int4
    decode copies even when the others get int8 ones (`Transformer.quantize`)."""
    names = f.tensor_names()
    found = set()
    for i in range(config.n_layer):
        for ours, theirs in _BLOCK_TENSORS.items():
            tensors = [f"blk.{i}.{t}" for t in theirs if f"blk.{i}.{t}" in names]
            if ours.endswith(".weight") and tensors and all(f.block_type(t) in AFFINE_4BIT for t in tensors):
                found.add(f"blocks.{i}.{ours.removesuffix('.weight')}")
    return found


def model_config(f: GGUFFile) -> ModelConfig:
    arch = f.architecture
    if arch not in ARCHITECTURES:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise UnsupportedModelError(f"Architecture '{arch}' is not supported (supported: {supported}).")
    vocab = f.shape("token_embd.weight")[0]
    return ARCHITECTURES[arch](f, vocab)


def gguf_state(f: GGUFFile, config: ModelConfig, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The Transformer's parameters, dequantized from the GGUF into `dtype` (norms: float32), by our names."""
    names = f.tensor_names()
    state: dict[str, torch.Tensor] = {
        "embed.weight": f.tensor("token_embd.weight", dtype),
        "norm.weight": f.tensor("output_norm.weight", torch.float32),
    }
    if not config.tied_embeddings:
        state["lm_head.weight"] = f.tensor("output.weight", dtype)
    for i in range(config.n_layer):
        for ours, theirs in _BLOCK_TENSORS.items():
            present = [f"blk.{i}.{name}" for name in theirs if f"blk.{i}.{name}" in names]
            if not present:
                continue
            if len(present) < len(theirs):
                raise ModelLoadError(f"{f.path} has {present[0]} without the tensors stacked with it.")
            norm = ours.endswith("norm.weight")  # norms stay float32 (RMSNorm)
            parts = [f.tensor(name, torch.float32 if norm else dtype) for name in present]
            state[f"blocks.{i}.{ours}"] = parts[0] if len(parts) == 1 else torch.cat(parts)
    return state


def build(
    config: ModelConfig, state: dict[str, torch.Tensor], device: torch.device, source: object
) -> Transformer:
    """A Transformer holding `state`'s tensors (moved to `device`, not copied on the CPU); `check_state`
    first."""
    check_state(config, state, source)
    with torch.device("meta"):
        model = Transformer(config)
    quantized = {name for name in state if decode_copy(name)}
    model.load_state_dict({k: t.to(device) for k, t in state.items() if k not in quantized}, assign=True)
    for name in quantized:
        owner, _, attr = name.rpartition(".")
        setattr(model.get_submodule(owner) if owner else model, attr, state[name].to(device))
    return model.eval()


def check_state(config: ModelConfig, state: dict[str, torch.Tensor], source: object) -> None:
    """Raise ModelLoadError, naming `source`, unless `state` has every parameter of the architecture with
    its shape and a floating dtype, and either none or all of the decode copies (engine/models/
    quantized.py): for each linear that has one (`copy_kind`) `*.int8` int8 and `*.int8_scale` in the
    weights' dtype, or `*.int4` uint8 and `*.int4_scales` in the weights' dtype; `head_int4` uint8,
    `head_int4_scales` in the weights' dtype and `head_int4_error` float32 for the output head."""
    with torch.device("meta"):
        model = Transformer(config)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    kinds: dict[str, torch.dtype | str] = {}  # the decode copies' dtypes; "weights": the weights' dtype
    pairs: dict[str, list[tuple[str, str]]] = {}  # per linear: the copies it may hold (one of them)
    for name in list(expected):
        owner = name.removesuffix(".weight")
        if owner != name and owner != "lm_head" and isinstance(model.get_submodule(owner), Linear):
            rows, inputs = expected[name]
            packed = packed_rows(rows)
            if copy_kind(inputs, 4) == "int4":
                expected[f"{owner}.int4"], kinds[f"{owner}.int4"] = (packed, inputs // 2), torch.uint8
                expected[f"{owner}.int4_scales"] = (inputs // INT4_GROUP, packed, 2)
                kinds[f"{owner}.int4_scales"] = "weights"
                pairs.setdefault(owner, []).append((f"{owner}.int4", f"{owner}.int4_scales"))
            if copy_kind(inputs, 8) == "int8":
                expected[f"{owner}.int8"], kinds[f"{owner}.int8"] = (rows, inputs), torch.int8
                expected[f"{owner}.int8_scale"], kinds[f"{owner}.int8_scale"] = (rows,), "weights"
                pairs.setdefault(owner, []).append((f"{owner}.int8", f"{owner}.int8_scale"))
    n, k = expected.get("lm_head.weight", expected["embed.weight"])
    p = packed_rows(n)
    head = {"head_int4": (p, k // 2), "head_int4_scales": (k // INT4_GROUP, p, 2), "head_int4_error": (n,)}
    expected |= head
    kinds |= {"head_int4": torch.uint8, "head_int4_scales": "weights", "head_int4_error": torch.float32}
    quantized = {name for name in state if decode_copy(name)}
    if quantized and k % INT4_GROUP:
        raise ModelLoadError(
            f"{source} holds int4 copies of a head {k} wide (not a multiple of {INT4_GROUP})."
        )
    required = {name for name in expected if not decode_copy(name)}
    if quantized:  # the copies: all or none, one kind per linear
        required |= set(head)
        for owner, options in pairs.items():
            held = [pair for pair in options if set(pair) & quantized]
            if len(held) > 1:
                raise ModelLoadError(f"{source} holds both an int4 and an int8 copy of {owner}.")
            required |= set(held[0] if held else options[0])
    missing = sorted(required - set(state))
    if missing:
        raise ModelLoadError(f"{source} lacks tensors the {config.arch} architecture needs: {missing[:3]}.")
    weights = state["embed.weight"].dtype
    for name, tensor in state.items():
        if name not in expected:
            raise ModelLoadError(
                f"{source} holds a tensor {name} the {config.arch} architecture does not have."
            )
        if tuple(tensor.shape) != expected[name]:
            got = tuple(tensor.shape)
            raise ModelLoadError(f"Tensor {name} in {source} has shape {got}, expected {expected[name]}.")
        want = kinds.get(name)
        want = weights if want == "weights" else want
        if (want is not None and tensor.dtype != want) or (want is None and not tensor.is_floating_point()):
            raise ModelLoadError(f"Tensor {name} in {source} has the wrong type {tensor.dtype}.")
