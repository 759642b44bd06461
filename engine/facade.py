"""Engine: the one object the assistant talks to. It owns the loaded model and the memory pipeline."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from engine.errors import EmptyPromptError
from engine.generate import Generation, Sampling
from engine.runtime import Runtime


class Engine:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self._cancel = threading.Event()

    @classmethod
    def open(cls, model_path: str | Path | None = None, device: str | None = None) -> Engine:
        return cls(Runtime.load(model_path, device=device))

    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> Iterator[str]:
        """Continue `prompt` as plain text, streaming pieces; `stop()` ends it early."""
        if not prompt.strip():
            raise EmptyPromptError("The prompt is empty: there is nothing to continue.")
        tok = self.runtime.tokenizer
        self._cancel.clear()
        return Generation(
            self.runtime.model,
            tok,
            tok.encode(prompt, bos=True),
            max_new_tokens=max_new_tokens,
            sampling=Sampling(temperature, top_p, seed),
            stop_ids=tok.stop_ids,
            cancel=self._cancel,
        ).run()

    def stop(self) -> None:
        self._cancel.set()

    @property
    def description(self) -> str:
        c = self.runtime.model.config
        return f"{self.runtime.path.name} ({c.arch}, {c.n_layer} layers) on {self.runtime.model.device}"

    @staticmethod
    def benchmark(
        name: str, output_dir: Path, model_path: str | Path | None = None, device: str | None = None
    ) -> tuple[dict, str]:
        """Run a named benchmark; return its results and a Markdown table, and write the JSON file."""
        from engine.bench import run_benchmark

        return run_benchmark(name, output_dir, model_path, device)
