"""Read a GGUF file: its metadata as plain Python values and its tensors dequantized into torch."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType
from gguf.quants import dequantize

from engine.errors import ModelLoadError, UnsupportedModelError

_LIST_FIELDS_SKIPPED = ("tokenizer.ggml.",)  # vocabularies are read by the tokenizer, not here


@dataclass
class GGUFFile:
    """An opened GGUF file; tensors are memory-mapped until `tensor()` dequantizes one."""

    path: Path
    metadata: dict[str, object]
    _reader: GGUFReader

    @classmethod
    def open(cls, path: str | Path) -> GGUFFile:
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"Model file not found: {path}.")
        try:
            reader = GGUFReader(path, "r")
        except Exception as exc:  # the reader raises bare ValueErrors, struct errors, IndexErrors...
            raise ModelLoadError(f"{path} is not a readable GGUF model ({exc}).") from exc
        return cls(path, _read_metadata(reader), reader)

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise ModelLoadError(f"{self.path} has no general.architecture entry.")
        return arch

    def get(self, key: str, default: object = None) -> object:
        """A metadata value under the architecture's namespace (`gemma3.block_count` as `block_count`)."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

    def require(self, key: str) -> object:
        value = self.get(key)
        if value is None:
            raise ModelLoadError(f"{self.path} lacks the metadata entry {self.architecture}.{key}.")
        return value

    def tensor_names(self) -> set[str]:
        return {t.name for t in self._reader.tensors}

    def shape(self, name: str) -> tuple[int, ...]:
        """A tensor's shape in torch order (GGUF lists dimensions innermost first)."""
        return tuple(int(n) for n in reversed(self._info(name).shape.tolist()))

    def block_type(self, name: str) -> str:
        """A tensor's GGUF storage type, e.g. "Q4_K", "Q5_0", "F32"."""
        return self._info(name).tensor_type.name

    def tensor(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """Dequantize one tensor into (out_features, in_features) order, as nn.Linear stores weights."""
        t, shape = self._info(name), self.shape(name)
        try:
            if t.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
                array = np.array(t.data, dtype=np.float32)  # a copy: the map is read-only
            else:
                array = dequantize(t.data, t.tensor_type)
        except NotImplementedError as exc:
            raise UnsupportedModelError(
                f"Tensor type {t.tensor_type.name} of {name} is not supported."
            ) from exc
        except Exception as exc:
            raise ModelLoadError(f"Tensor {name} in {self.path} is damaged ({exc}).") from exc
        return torch.from_numpy(array.reshape(shape)).to(dtype)

    def fingerprints(self) -> tuple[str, str]:
        """(model, tokenizer) SHA-256 hex digests, what a memory bank file records about its writer.

        The model's covers the architecture's metadata entries (`general.architecture` and `<arch>.*`, as
        stored), every tensor's name, shape and type, and all tensor data, so a requantized or fine-tuned
        file differs while a renamed or re-tagged one does not; the tokenizer's covers the `tokenizer.*`
        entries. About 0.3 s for the 253 MB default model."""
        arch, data = self.architecture, self._reader.data
        model, tokenizer = hashlib.sha256(), hashlib.sha256()
        for key, field in sorted(self._reader.fields.items()):
            raw = data[field.offset : field.offset + sum(p.nbytes for p in field.parts)]
            if key == "general.architecture" or key.startswith(f"{arch}."):
                model.update(raw)
            elif key.startswith("tokenizer."):
                tokenizer.update(raw)
        infos = [[t.name, t.shape.tolist(), int(t.tensor_type)] for t in self._reader.tensors]
        model.update(json.dumps(infos).encode())
        model.update(data[self._reader.data_offset :])
        return model.hexdigest(), tokenizer.hexdigest()

    def _info(self, name: str):
        for t in self._reader.tensors:
            if t.name == name:
                return t
        raise ModelLoadError(f"{self.path} lacks the tensor {name}.")


def _read_metadata(reader: GGUFReader) -> dict[str, object]:
    metadata: dict[str, object] = {}
    for key, field in reader.fields.items():
        is_list = field.types and field.types[0] == GGUFValueType.ARRAY
        if is_list and key.startswith(_LIST_FIELDS_SKIPPED):
            continue
        metadata[key] = field.contents()
    return metadata
