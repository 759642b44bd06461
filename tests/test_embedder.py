"""The ONNX embedder against a plain PyTorch forward of the same weights, and its cached export."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from engine.errors import DeviceError
from engine.retrieval.embedder import Embedder, weights_dir

TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "",
    "Crème brûlée, naïve café — ÜBER straße!",
    "The quarterly report shows revenue grew 12% to $4.2M in Q3 2024 (see table 7).",
    " ".join(f"word{i} and more text" for i in range(200)),  # far past 256 word pieces: truncated
]


@pytest.fixture(scope="module")
def embedder(embedder_cache: Path) -> Embedder:
    return Embedder.load(embedder_cache)


def reference(weights: dict[str, torch.Tensor], ids: list[int]) -> np.ndarray:
    """BERT forward of one unpadded text, written from the tensor names, in float64; mean-pooled, unit."""
    W = {name: t.double() for name, t in weights.items()}
    T, H, D = len(ids), 12, 32

    def ln(x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, (H * D,), W[f"{name}.weight"], W[f"{name}.bias"], 1e-12)

    def lin(x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, W[f"{name}.weight"], W[f"{name}.bias"])

    x = W["embeddings.word_embeddings.weight"][ids] + W["embeddings.position_embeddings.weight"][:T]
    x = ln(x + W["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    for i in range(6):
        p = f"encoder.layer.{i}"
        q, k, v = (
            lin(x, f"{p}.attention.self.{n}").view(T, H, D).transpose(0, 1) for n in ("query", "key", "value")
        )
        a = (torch.softmax(q @ k.transpose(1, 2) / D**0.5, -1) @ v).transpose(0, 1).reshape(T, H * D)
        x = ln(x + lin(a, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm")
        h = F.gelu(lin(x, f"{p}.intermediate.dense"))
        x = ln(x + lin(h, f"{p}.output.dense"), f"{p}.output.LayerNorm")
    pooled = x.mean(0)
    return (pooled / pooled.norm()).numpy()


def test_matches_a_plain_torch_forward(embedder: Embedder) -> None:
    weights = load_file(weights_dir() / "model.safetensors")
    got = embedder.embed(TEXTS, batch_size=4)  # batches mix lengths, so padding must not leak in
    for text, vector in zip(TEXTS, got, strict=True):
        ids = embedder.tokenizer.encode(text).ids
        assert len(ids) <= 256
        assert float(vector @ reference(weights, ids)) > 0.9999, text


def test_unit_vectors_of_the_right_shape(embedder: Embedder) -> None:
    v = embedder.embed(TEXTS)
    assert v.shape == (len(TEXTS), 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)
    np.testing.assert_allclose(embedder.embed(TEXTS[:1])[0], v[0], atol=1e-5)


def test_similar_sentences_are_closer(embedder: Embedder) -> None:
    food, bread, baby, horse, music = embedder.embed(
        [
            "A man is eating food.",
            "A man is eating a piece of bread.",
            "The girl is carrying a baby.",
            "A man is riding a horse.",
            "She plays the violin in an orchestra.",
        ]
    )
    assert food @ bread == pytest.approx(0.755, abs=0.01)  # sentence-transformers' published figure
    assert food @ bread > max(food @ baby, food @ horse, food @ music)
    assert bread @ food > bread @ music


def test_export_is_cached_and_redone_when_damaged(
    embedder: Embedder, embedder_cache: Path, tmp_path: Path
) -> None:
    path = tmp_path / "all-MiniLM-L6-v2.onnx"
    shutil.copy(embedder_cache / path.name, path)  # where the fixture's Embedder.load exported it
    before = path.stat().st_mtime_ns
    Embedder.load(cache_dir=tmp_path)
    assert path.stat().st_mtime_ns == before  # reused, not exported again

    path.write_bytes(b"not an onnx file")
    again = Embedder.load(cache_dir=tmp_path)
    assert path.stat().st_size > 80_000_000
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    np.testing.assert_allclose(again.embed(TEXTS[:2]), embedder.embed(TEXTS[:2]), atol=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(embedder_cache: Path) -> None:
    with pytest.raises(DeviceError):
        Embedder.load(embedder_cache, device="cuda")
