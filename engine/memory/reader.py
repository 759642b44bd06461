"""How attention reads attached memories: a temperature and a scale on the memory keys' share.

Memory keys were written by the model reading each reference alone; read beside the context, an
untrained model gives them a share of attention it never learned to calibrate. Adaptive Parallel Encoding
(APE, Yang et al. 2025, arXiv 2502.05431) fixes the same mismatch for contexts encoded in parallel with two
numbers: a temperature T on their attention logits (T < 1 sharpens them) and a scale S on their share
(a log S added to their logits). `MemoryReader` holds one (T, log S) per layer and KV head, so the same
object serves the hand-tuned uniform setting and a per-layer one learned by self-distillation.

The reader changes only what memories contribute: with no memory attached (RAG, none) attention is the
model's own, and the base reader (T = 1, S = 1) is exactly no reader.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from engine.errors import ReaderFileError, ReaderMismatchError

FORMAT = "memory3-reader/1"  # the safetensors file's `format` metadata
BUNDLED = Path(__file__).resolve().parents[2] / "assets" / "memory-reader.safetensors"  # `m3 train reader`
TEMPERATURES = (0.05, 20.0)  # beyond these a reader makes attention to memories all-or-nothing
LOG_SCALES = (-10.0, 10.0)  # the same for the memories' share (S from 1/22,000 to 22,000)


@dataclass(frozen=True)
class MemoryReader:
    """temperature, log_scale: (n_layer, Hkv) float32. A memory key k of layer l, head h is attended as
    k / temperature[l, h] with log_scale[l, h] added to its logit (before the softmax over memory and
    context keys together)."""

    name: str
    temperature: torch.Tensor
    log_scale: torch.Tensor

    def __post_init__(self) -> None:
        if self.temperature.shape != self.log_scale.shape or self.temperature.dim() != 2:
            raise ValueError(
                f"a reader's temperature {tuple(self.temperature.shape)} and log-scale "
                f"{tuple(self.log_scale.shape)} must both be (layers, kv heads)"
            )
        (t_lo, t_hi), (s_lo, s_hi) = TEMPERATURES, LOG_SCALES
        t, s = self.temperature.detach(), self.log_scale.detach()
        if not bool(((t >= t_lo) & (t <= t_hi)).all()) or not bool(((s >= s_lo) & (s <= s_hi)).all()):
            raise ValueError(
                f"a reader's temperatures must lie in [{t_lo}, {t_hi}] and its log-scales in [{s_lo}, {s_hi}]"
            )

    @classmethod
    def uniform(
        cls, name: str, n_layer: int, n_kv_head: int, temperature: float, scale: float
    ) -> MemoryReader:
        """The same (T, S) in every layer and head (APE's setting); (1, 1) reads as the model does."""
        if scale <= 0:
            raise ValueError(f"a reader's scale must be positive, not {scale}")
        shape = (n_layer, n_kv_head)
        return cls(name, torch.full(shape, float(temperature)), torch.full(shape, math.log(scale)))

    def key_factor(self, layer: int) -> torch.Tensor:
        """(Hkv, 1, 1): what the layer's roped memory keys are multiplied by (1 / T)."""
        return (1.0 / self.temperature[layer])[:, None, None]

    def bias(self, layer: int) -> torch.Tensor | None:
        """(Hkv,) log S added to the layer's memory logits; None where it is zero and not being trained (no
        float mask needed)."""
        row = self.log_scale[layer]
        return row if row.requires_grad or bool(row.any()) else None

    def save(self, path: Path, model_fingerprint: str, provenance: str) -> None:
        """Write the reader as safetensors (temperature, log_scale) with its name, the model it was trained
        for (its GGUF's SHA-256) and where its training data came from in the metadata."""
        tensors = {"temperature": self.temperature.contiguous(), "log_scale": self.log_scale.contiguous()}
        meta = {"format": FORMAT, "name": self.name, "model": model_fingerprint, "provenance": provenance}
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: Path, model_fingerprint: str, shape: tuple[int, int]) -> MemoryReader:
        """The reader in `path`, for the model with this fingerprint and (layers, KV heads) `shape`;
        ReaderFileError (one sentence) for a file that is missing or not a reader, ReaderMismatchError for a
        reader made for another model."""
        check_file(path)
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                temperature, log_scale = f.get_tensor("temperature"), f.get_tensor("log_scale")
            reader = cls(meta.get("name", path.stem), temperature.float(), log_scale.float())
        except (OSError, SafetensorError, KeyError, ValueError) as exc:
            raise ReaderFileError(f"The memory reader {path} is not a memory reader file ({exc}).") from exc
        if meta.get("format") != FORMAT:
            raise ReaderFileError(f"The memory reader {path} is not a memory reader file ({FORMAT}).")
        if meta.get("model") != model_fingerprint or tuple(reader.temperature.shape) != shape:
            raise ReaderMismatchError(
                f"The memory reader {path} was trained for another model than the one loaded."
            )
        return reader


def check_file(path: Path) -> None:
    """ReaderFileError (one sentence) for a reader path that is missing or a folder: what can be told
    before a model is loaded."""
    if not path.exists():
        raise ReaderFileError(f"The memory reader {path} does not exist.")
    if path.is_dir():
        raise ReaderFileError(f"The memory reader {path} is a folder, not a reader file.")


def resolve(setting: str, model_fingerprint: str, shape: tuple[int, int]) -> MemoryReader | None:
    """The reader the `[engine] reader` setting names (EngineConfig.load normalised it): "base" reads
    memories as the model reads text (None); "trained" is the bundled reader (assets/, `m3 train reader`)
    where it was trained for this model, else None; anything else is a reader file's absolute path.
    ReaderFileError (naming the setting) when the file named, or a damaged bundled one, cannot be used."""
    if setting == "base":
        return None
    bundled = setting == "trained"
    try:
        return MemoryReader.load(BUNDLED if bundled else Path(setting), model_fingerprint, shape)
    except ReaderMismatchError:
        if bundled:
            return None  # another model than the bundled reader's: it reads as the model does
        raise
    except ReaderFileError as exc:
        if bundled and not BUNDLED.exists():
            return None  # a checkout without the asset
        raise ReaderFileError(f"[engine] reader = {setting!r}: {exc}") from exc
