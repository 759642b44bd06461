"""llama.cpp on the same GGUF, through llama-cpp-python: our correctness oracle and speed reference."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.errors import ModelLoadError
from engine.models.tokenizer import _redirect_stderr


class LlamaCpp:
    def __init__(self, path: str | Path, n_ctx: int = 2048, n_threads: int | None = None):
        from llama_cpp import Llama

        try:
            with open(os.devnull, "w") as devnull, _redirect_stderr(devnull):
                self.llm = Llama(
                    model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_threads=n_threads, verbose=False
                )
        except Exception as exc:
            raise ModelLoadError(f"llama.cpp could not load {path} ({exc}).") from exc

    def next_logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits (vocab,) for the token after `ids`, from a fresh context."""
        self.llm.reset()
        self.llm.eval(list(ids))
        return self._last_logits()

    def greedy(self, ids: Sequence[int], n: int) -> list[int]:
        """n greedy tokens after `ids` (no stop tokens: the comparison wants the raw continuation)."""
        self.llm.reset()
        out: list[int] = []
        self.llm.eval(list(ids))
        for _ in range(n):
            token = int(np.argmax(self._last_logits()))
            out.append(token)
            self.llm.eval([token])
        return out

    def _last_logits(self) -> np.ndarray:
        # llama-cpp-python keeps only sampler state unless logits_all; read the last row from the context
        ptr = self.llm._ctx.get_logits_ith(-1)
        return np.ctypeslib.as_array(ptr, shape=(self.llm.n_vocab(),)).astype(np.float32)
