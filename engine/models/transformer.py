"""A decoder-only transformer that reads GGUF weights and can attend to explicit memories.

Every memory-aware detail lives in the attention: keys carry their own positions (context tokens and
memory tokens alike), so one mask rule — causal by position, plus the sliding window on local layers —
treats a memory token exactly like a text token at the same position.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.config import ModelConfig
from engine.models.kv_cache import KVCache
from engine.models.quantized import DECODE_ROWS, INT4_GROUP, Linear, head_logits, quantize_int4


class Capture(Protocol):
    """Receives what the memory writer needs from each layer during a forward pass."""

    def record(
        self, layer: int, q: torch.Tensor, k_pre: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> None: ...


class Probe(Protocol):
    """Receives attention weights, for citing the sources an answer attended to, from `layers` only (the
    other layers attend without handing their weights out, through the fused kernel)."""

    layers: frozenset[int]

    def observe(self, layer: int, weights: torch.Tensor) -> None:
        """weights: (B, Hkv, G, T, N) softmax probabilities of T queries (G per KV head) over N keys."""


class RMSNorm(nn.Module):
    """RMS norm computed in float32 with a float32 weight (the GGUF stores norms in F32; keeping them so
    spares a conversion per call: a decode step makes 109 of them)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x (..., D) normalised over D in float32, times `weight` (float32, broadcastable to x: (D,), or one
    row per head), returned in x's dtype."""
    return (F.rms_norm(x.float(), x.shape[-1:], None, eps) * weight).to(x.dtype)


Rope = tuple[torch.Tensor, torch.Tensor]  # (cos, sin), each (..., T, D/2) float32


class Rotary(nn.Module):
    """Rotary position embedding, applied at any positions (memories are roped at read time).

    `angles(pos)` is computed once per forward pass and base and shared by every layer using that base
    (gpt-fast's `freqs_cis`), rather than once per layer and call."""

    def __init__(self, head_dim: int, base: float, style: str):
        super().__init__()
        self.head_dim, self.base, self.style = head_dim, base, style

    def angles(self, pos: torch.Tensor) -> Rope:
        """(cos, sin) of integer positions `pos` (..., T): (..., T, D/2) float32, computed in float64."""
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.float64, device=pos.device) / self.head_dim
        angles = pos.to(torch.float64).unsqueeze(-1) / (self.base**exponents)
        return angles.cos().float(), angles.sin().float()

    def forward(self, x: torch.Tensor, pos: torch.Tensor, rope: Rope | None = None) -> torch.Tensor:
        """x (..., T, D) roped at positions pos (broadcastable to (..., T)), or at precomputed `rope`."""
        cos, sin = rope if rope is not None else self.angles(pos)
        xf = x.float()
        if self.style == "neox":
            x1, x2 = xf.chunk(2, dim=-1)
            out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
        else:  # gptj: adjacent pairs
            x1, x2 = xf[..., 0::2], xf[..., 1::2]
            out = torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).flatten(-2)
        return out.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        c = config
        self.layer, self.n_head, self.n_kv_head, self.head_dim = layer, c.n_head, c.n_kv_head, c.head_dim
        self.scale = c.attn_scale
        self.window = c.sliding_window if c.local_layers[layer] else None
        # queries, keys and values in one matmul (rows in that order): one weight read per step, not three
        self.wqkv = Linear(c.d_model, (c.n_head + 2 * c.n_kv_head) * c.head_dim, bias=c.qkv_bias)
        self.wo = Linear(c.n_head * c.head_dim, c.d_model, bias=False)
        self.q_norm = RMSNorm(c.head_dim, c.norm_eps) if c.qk_norm else None
        self.k_norm = RMSNorm(c.head_dim, c.norm_eps) if c.qk_norm else None
        local_base = c.rope_base_local if (self.window and c.rope_base_local) else c.rope_base
        self.rotary = Rotary(c.head_dim, local_base, c.rope_style)

    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor,
        rope: Rope,
        cache: KVCache | None,
        capture: Capture | None,
        probe: Probe | None = None,
    ) -> torch.Tensor:
        """rope: this layer's base's (cos, sin) at `pos`, shaped (B, 1, T, D/2)."""
        B, T, _ = x.shape
        H, D = self.n_head, self.head_dim
        qkv = self.wqkv(x).view(B, T, -1, D).transpose(1, 2)  # (B, H + 2 Hkv, T, D)
        qk, v = qkv.split([H + self.n_kv_head, self.n_kv_head], dim=1)
        if self.q_norm is not None:  # queries and keys normed, then roped, together: half the small ops
            q_weight, k_weight = self.q_norm.weight, self.k_norm.weight
            weight = torch.cat([q_weight.expand(H, 1, D), k_weight.expand(self.n_kv_head, 1, D)])
            qk = rms_norm(qk, weight, self.q_norm.eps)
        k_pre = qk[:, H:]  # memories store keys before RoPE, so the reader may place them anywhere
        q, k = self.rotary(qk, pos, rope).split([H, self.n_kv_head], dim=1)
        if capture is not None:
            capture.record(self.layer, q, k_pre, k, v)
        if cache is None:
            keys, values, key_pos, bias = k, v, pos[:, None, :].expand(B, self.n_kv_head, T), None
        else:
            keys, values, key_pos = cache.update(self.layer, k, v, pos)
            bias = cache.key_bias(self.layer, keys.shape[2])
        y = self._attend(q, keys, values, pos, key_pos, bias, probe)  # (B, H, T, D)
        return self.wo(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))

    def allowed(self, q_pos: torch.Tensor, key_pos: torch.Tensor) -> torch.Tensor:
        """(B, Hkv, T, N): a key is visible if it is not later than the query and inside the window."""
        qp = q_pos[:, None, :, None]  # (B, 1, T, 1)
        kp = key_pos[:, :, None, :]  # (B, Hkv, 1, N)
        ok = kp <= qp
        if self.window is not None:
            ok &= (qp - kp) < self.window
        return ok

    def _attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        q_pos: torch.Tensor,
        key_pos: torch.Tensor,
        bias: torch.Tensor | None,
        probe: Probe | None,
    ) -> torch.Tensor:
        """bias: None, or (Hkv, N) added to the logits of the visible keys (a MemoryReader's)."""
        # Grouped-query attention without copying K/V: fold each group's query heads into the time axis.
        B, H, T, D = q.shape
        G = H // self.n_kv_head
        qg = q.reshape(B, self.n_kv_head, G * T, D)
        mask = self.allowed(q_pos, key_pos)  # (B, Hkv, T, N); one query (decode) broadcasts over G
        if bias is not None:  # a float mask: the bias where visible, -inf elsewhere
            mask = torch.where(mask, bias[None, :, None, :].to(q.dtype), float("-inf"))
        if T > 1:
            mask = mask[:, :, None].expand(-1, -1, G, -1, -1).reshape(B, self.n_kv_head, G * T, -1)
        if probe is None:
            y = F.scaled_dot_product_attention(qg, k, v, attn_mask=mask, scale=self.scale)
        else:  # the same attention with its weights in hand (used for decode steps, not prefill)
            scores = (qg.float() @ k.float().transpose(-1, -2)) * self.scale
            scores = scores + mask.float() if bias is not None else scores.masked_fill(~mask, float("-inf"))
            weights = scores.softmax(-1)
            probe.observe(self.layer, weights.view(B, self.n_kv_head, G, T, -1))
            y = (weights @ v.float()).to(v.dtype)
        return y.reshape(B, H, T, D)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_up = Linear(config.d_model, 2 * config.ffn_dim, bias=False)  # gate rows, then up rows
        self.down = Linear(config.ffn_dim, config.d_model, bias=False)
        self.act = (lambda t: F.gelu(t, approximate="tanh")) if config.activation == "gelu_tanh" else F.silu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(self.act(gate) * up)


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        eps = config.norm_eps
        self.attn_norm = RMSNorm(config.d_model, eps)
        self.attn = Attention(config, layer)
        self.mlp_norm = RMSNorm(config.d_model, eps)
        self.mlp = MLP(config)
        self.post_attn_norm = RMSNorm(config.d_model, eps) if config.sandwich_norms else nn.Identity()
        self.post_mlp_norm = RMSNorm(config.d_model, eps) if config.sandwich_norms else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor,
        ropes: dict[float, Rope],
        cache: KVCache | None,
        capture: Capture | None,
        probe: Probe | None,
    ) -> torch.Tensor:
        rope = ropes[self.attn.rotary.base]
        x = x + self.post_attn_norm(self.attn(self.attn_norm(x), pos, rope, cache, capture, probe))
        return x + self.post_mlp_norm(self.mlp(self.mlp_norm(x)))


@dataclass
class ForwardOut:
    logits: torch.Tensor | None  # (B, T_out, vocab) float32
    hidden: torch.Tensor  # (B, T, d_model) after the final norm


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        # given an (uninitialized) weight, Embedding skips its random init: on the meta device the first
        # normal_() costs 1.3 s of one-time set-up, a third of loading from the weight cache
        table = torch.empty(config.vocab_size, config.d_model)
        self.embed = nn.Embedding(config.vocab_size, config.d_model, _weight=table)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = None if config.tied_embeddings else Linear(config.d_model, config.vocab_size)
        # rows of the embedding table by token id, read without mapping the table (weight_cache.TableRows)
        self.embed_rows: Callable[[torch.Tensor], torch.Tensor] | None = None
        # the output head's int4 copy for decode steps (see `quantize`)
        self.register_buffer("head_int4", None)
        self.register_buffer("head_int4_scales", None)
        self.register_buffer("head_int4_error", None)

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    @property
    def global_layers(self) -> frozenset[int]:
        """The layers that attend to the whole context: those without a sliding window (every layer of a
        model made of windowed layers only)."""
        everywhere = frozenset(range(self.config.n_layer))
        return frozenset(i for i in everywhere if not self.config.local_layers[i]) or everywhere

    @property
    def decode_weights(self) -> str:
        """The linears' decode copies: "int8" when any is int8 (those the GGUF stores in 4-bit blocks are
        int4 even then: see `quantize`), else "int4"; "bf16" when there are none."""
        if self.head_int4 is None:
            return "bf16"
        linears = [m for m in self.blocks.modules() if isinstance(m, Linear)]
        return "int8" if any(m.int8 is not None for m in linears) else "int4"

    def forward(
        self,
        tokens: torch.Tensor,
        pos: torch.Tensor,
        cache: KVCache | None = None,
        capture: Capture | None = None,
        logits: str = "last",
        probe: Probe | None = None,
        exact: bool = False,
    ) -> ForwardOut:
        """tokens, pos: (B, T). logits: "last", "all" or "none"; exact: through the full output head, never
        its int4 shortlist (see `head`). A cache, if given, advances by T."""
        x = self.embed(tokens) if self.embed_rows is None else self.embed_rows(tokens)
        if self.config.embed_scale != 1.0:
            x = (x.float() * self.config.embed_scale).to(x.dtype)
        rotaries = {b.attn.rotary.base: b.attn.rotary for b in self.blocks}
        ropes = {base: r.angles(pos[:, None, :]) for base, r in rotaries.items()}
        for i, block in enumerate(self.blocks):
            observed = probe if probe is not None and i in probe.layers else None
            x = block(x, pos, ropes, cache, capture, observed)
        if cache is not None:
            cache.advance(tokens.shape[1])
        h = self.norm(x)
        if logits == "none":
            return ForwardOut(None, h)
        hl = h[:, -1:] if logits == "last" else h
        return ForwardOut(self.head(hl, exact), h)

    def head(self, h: torch.Tensor, exact: bool = False) -> torch.Tensor:
        """Logits (..., vocab) float32 of final hidden states h (..., d_model): through the int4 shortlist
        for a few rows when the copy exists and not `exact` (engine/models/quantized.py, `head_logits`:
        the best token's logit is exact, those far below it are int4 values)."""
        table = self.embed.weight if self.lm_head is None else self.lm_head.weight
        if self.head_int4 is not None and not exact and h.numel() <= DECODE_ROWS * h.shape[-1]:
            rows = h.reshape(-1, h.shape[-1])
            copy = (self.head_int4, self.head_int4_scales, self.head_int4_error)
            logits = head_logits(rows, table, *copy, self.embed_rows if self.lm_head is None else None)
            return logits.view(*h.shape[:-1], -1)
        return F.linear(h, table).float()

    def quantize(self, bits: int, four_bit: Collection[str] = ()) -> None:
        """Add decode copies (engine/models/quantized.py): of every linear in `bits` (4 or 8), in int4 for
        the linears named in `four_bit` (those the GGUF stores in 4-bit blocks: loader.four_bit_linears),
        and an int4 copy of the output head; the bf16 weights stay for prefill and memory writing. A model
        whose width is not a multiple of INT4_GROUP gets none (its decode reads the bf16 weights)."""
        if self.config.d_model % INT4_GROUP:
            return
        for name, module in self.named_modules():
            if isinstance(module, Linear) and module is not self.lm_head:
                module.quantize(4 if name in four_bit else bits)
        table = self.embed.weight if self.lm_head is None else self.lm_head.weight
        self.head_int4, self.head_int4_scales, self.head_int4_error = quantize_int4(table.detach())

    def new_cache(self, max_seq: int, memory_slots: int = 0, batch: int = 1) -> KVCache:
        c = self.config
        return KVCache(
            c.n_layer, batch, c.n_kv_head, c.head_dim, max_seq, memory_slots, self.dtype, self.device
        )
