"""Engine: the one object the assistant talks to. It owns the model, the catalog and the memory pipeline.

Everything loads on first use: listing folders needs neither the weights nor the catalog's model, and a
`m3 status` should not wait 15 seconds for a model it never runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path

from engine.errors import EmptyPromptError
from engine.generate import Generation, Sampling
from engine.runtime import Runtime, default_model_path
from engine.tokenizer import Tokenizer
from ingest.catalog import Catalog, Folder
from ingest.folders import add_folder, remove_folder
from ingest.ingester import Ingester, Progress, Status
from ingest.paths import data_dir
from ingest.scan import ScanReport


class Engine:
    def __init__(self, model_path: str | Path | None = None, device: str | None = None):
        self._model_path = Path(model_path) if model_path is not None else None
        self._device = device
        self._cancel = threading.Event()

    @cached_property
    def model_path(self) -> Path:
        return self._model_path or default_model_path()

    @cached_property
    def runtime(self) -> Runtime:
        return Runtime.load(self.model_path, device=self._device)

    @cached_property
    def tokenizer(self) -> Tokenizer:
        """The runtime's tokenizer when the model is loaded; otherwise a vocabulary-only load (fast)."""
        if "runtime" in self.__dict__:
            return self.runtime.tokenizer
        return Tokenizer(self.model_path)

    @staticmethod
    def log_file() -> Path:
        """Where every part of memory3 logs (never the screen)."""
        return data_dir() / "logs" / "m3.log"

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog()

    # --- folders and ingest -------------------------------------------------------------------------

    def folders(self) -> list[Folder]:
        return self.catalog.folders()

    def add_folder(self, path: str | Path) -> Folder:
        return add_folder(self.catalog, path)

    def remove_folder(self, path: str | Path) -> Folder:
        return remove_folder(self.catalog, path)

    def ingester(self, on_progress: Callable[[Progress], None] | None = None) -> Ingester:
        tok = self.tokenizer
        return Ingester(self.catalog, lambda text: len(tok.encode(text)), on_progress=on_progress)

    def scan(
        self, path: str | Path | None = None, on_progress: Callable[[Progress], None] | None = None
    ) -> ScanReport:
        """Reconcile the watched folders (or the one at `path`) with the disk; parse and chunk the changes."""
        ingester = self.ingester(on_progress)
        chosen = None if path is None else [f for f in self.folders() if f.path == Path(path).resolve()]
        report = ingester.scan(chosen)
        ingester.process_pending()
        return report

    def watch(self, stop: threading.Event, on_progress: Callable[[Progress], None] | None = None) -> None:
        """Keep the catalog in step with the folders until `stop` is set."""
        self.ingester(on_progress).run(stop)

    def status(self) -> Status:
        return self.ingester().status()

    # --- generation ---------------------------------------------------------------------------------

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

    def benchmark(self, name: str, output_dir: Path) -> tuple[dict, str]:
        """Run a named benchmark; return its results and a Markdown table, and write the JSON file."""
        from engine.bench import run_benchmark

        return run_benchmark(name, output_dir, self.model_path, self._device)
