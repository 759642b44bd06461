"""Engine: the one object the assistant talks to. It owns the model, the catalog and the memory pipeline.

`Engine.open(home, model, device)` takes values: the environment and the command line are read by the
caller (the CLI, the service's entry point), never in here. Everything loads on first use: listing
folders needs neither the weights nor the catalog's model, and a status should not wait 15 seconds for a
model it never runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

from engine.bankfile.export import Exported, export_bank
from engine.bankfile.importer import Importer, Inspection
from engine.chat.chat import Answer, Chat
from engine.chat.generation import Generation, Sampling
from engine.chat.prompt import prompt_format
from engine.chat.sources import Sources
from engine.config import EngineConfig
from engine.errors import EmptyPromptError, UnknownProfileError
from engine.memory.bank import MemoryBank
from engine.memory.cache import MemoryCache
from engine.memory.profiles import MAX_REFERENCE_TOKENS, PROFILES, MemoryProfile
from engine.memory.reader import MemoryReader
from engine.memory.reader import resolve as resolve_reader
from engine.memory.store import MemoryStore
from engine.memory.writer import write_memories
from engine.models.runtime import Runtime, default_model_path
from engine.models.tokenizer import Tokenizer
from engine.retrieval.embedder import Embedder
from engine.retrieval.retriever import Retriever
from engine.turns import Turns
from ingest.catalog import Catalog, Folder
from ingest.chats import Chats
from ingest.config import IngestConfig
from ingest.errors import NotFoundError
from ingest.folders import add_folder, candidates, remove_folder
from ingest.ingester import Ingester, Progress, Status
from ingest.paths import Home
from ingest.scan import Scanning, ScanReport

log = logging.getLogger(__name__)


@dataclass
class Continuation:
    """A streamed plain continuation: iterate for text pieces; `tokens` counts those generated so far."""

    pieces: Iterator[str]
    generation: Generation

    def __iter__(self) -> Iterator[str]:
        yield from self.pieces

    @property
    def tokens(self) -> int:
        return len(self.generation.tokens)


class Engine:
    def __init__(
        self,
        home: Home,
        model: Path | None,
        device: str | None,
        runtime: Runtime | None,
        embedder: Embedder | None,
        config: EngineConfig,
        ingest_config: IngestConfig,
    ):
        self.home = home
        self.config, self.ingest_config = config, ingest_config
        self._model_path = runtime.path if runtime is not None else model
        self._device = device
        self._embedder = embedder
        self.turns = Turns()  # answers first; memory writing takes its turns in between
        self.scanning: Scanning | None = None  # how far the walk of a scan in progress is, for the status
        if runtime is not None:
            self.runtime = runtime

    @classmethod
    def open(
        cls,
        home: Home | str | Path,
        model: str | Path | None = None,
        device: str | None = None,
        runtime: Runtime | None = None,
        embedder: Embedder | None = None,
    ) -> Engine:
        """The engine over one memory3 home (a `Home`, or a root folder holding config/, data/, cache/).

        model: a GGUF file (default: the bundled Gemma 3 270M); device: cpu or cuda (default: CUDA when
        present); runtime, embedder: already loaded models to share (benchmarks and tests). The home's
        config.toml is read here, once: ConfigError or UnknownProfileError for a bad setting."""
        home = home if isinstance(home, Home) else Home.at(home)
        config = EngineConfig.load(home.config_file)
        if config.profile not in PROFILES:
            raise UnknownProfileError(
                f"config.toml: [engine] profile '{config.profile}' is not one of {', '.join(PROFILES)}."
            )
        ingest_config = IngestConfig.load(home.config_file)
        return cls(home, Path(model) if model else None, device, runtime, embedder, config, ingest_config)

    def load(self) -> None:
        """Load now what an answer needs (the service does so once, before it says it is ready). Opening
        repairs what a crash left (the bank's torn tail, a stale vector index), migrates an old catalog."""
        for name in ("runtime", "reader", "catalog", "bank", "store", "retriever", "chat"):
            getattr(self, name)

    @cached_property
    def model_path(self) -> Path:
        return self._model_path or default_model_path(self.home.cache)

    @cached_property
    def runtime(self) -> Runtime:
        weights, cache = self.config.decode_weights, self.home.cache
        return Runtime.load(self.model_path, device=self._device, cache=cache, decode_weights=weights)

    @cached_property
    def reader(self) -> MemoryReader | None:
        """How memory mode reads memories (`[engine] reader`; engine/memory/reader.py); None: as text."""
        c = self.runtime.model.config
        return resolve_reader(self.config.reader, self.runtime.fingerprints[0], (c.n_layer, c.n_kv_head))

    @cached_property
    def tokenizer(self) -> Tokenizer:
        """The runtime's tokenizer when the model is loaded; otherwise a vocabulary-only load (fast)."""
        if "runtime" in self.__dict__:
            return self.runtime.tokenizer
        return Tokenizer(self.model_path)

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog(self.home.catalog)

    @cached_property
    def chats(self) -> Chats:
        return Chats(self.catalog)

    @cached_property
    def retriever(self) -> Retriever:
        return Retriever(
            self.home.data / "retrieval",
            self._embedder or Embedder.load(self.home.cache / "embedder", device=self._device),
        )

    @property
    def profile(self) -> MemoryProfile:
        """The configured memory profile: what this engine writes and reads."""
        return PROFILES[self.config.profile]

    @cached_property
    def store(self) -> MemoryStore:
        """The bank (within its budget) and the cold-start path around it, writing with the loaded model."""
        return self.memory_store(self.bank, self.profile)

    def memory_store(self, bank: MemoryBank, profile: MemoryProfile) -> MemoryStore:
        """A store writing `profile` memories into `bank` with the loaded model (benchmarks use several)."""
        rt = self.runtime

        def write(texts: list[str]):
            refs = [rt.tokenizer.encode(t)[:MAX_REFERENCE_TOKENS] for t in texts]
            return write_memories(rt.model, rt.sink, refs, profile)

        return MemoryStore(bank, MemoryCache(rt.model.dtype, rt.model.device), write)

    @cached_property
    def bank(self) -> MemoryBank:
        """The on-disk memories. Keys that opening had to give up (a crash, a damaged file) go back to the
        catalog as memories to write; so do memories written under another profile than the configured one
        (`[engine] profile` changed): they are dropped, the bank compacted once, and the background writes
        them again under this profile (answers meanwhile write the ones they retrieve on the spot)."""
        bank = MemoryBank(self.home.data / "bank", self.config.bank_budget_bytes)
        if bank.opened.lost:
            self.catalog.complete_memory_work(dropped=bank.opened.lost)
        if other := sorted(set(bank.keys()) - set(bank.keys(self.profile.name))):
            log.info("%d memories of another profile than %s: written again", len(other), self.profile.name)
            bank.drop(other)
            bank.compact()
            self.catalog.complete_memory_work(dropped=other)
        return bank

    @cached_property
    def importer(self) -> Importer:
        return Importer(self)

    def export_bank(
        self,
        target: str | Path,
        folder: str | None = None,
        collection: str | None = None,
        documents: str | None = None,
        vectors: bool = True,
        on_progress: Callable[[str, int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Exported:
        """Write the documents in scope (a watched folder, an imported collection, a glob, or all), their
        chunks, memories and (unless `vectors` is False) vectors to the bank file `target`
        (engine/bankfile/export.py; the format: docs/bank-format.md)."""
        return export_bank(self, Path(target), folder, collection, documents, vectors, on_progress, cancel)

    def inspect_bank(
        self,
        path: str | Path,
        on_progress: Callable[[str, int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Inspection:
        """Check a bank file and say what importing it would do; nothing is written."""
        return self.importer.inspect(Path(path), on_progress, cancel)

    def import_bank(
        self,
        path: str | Path,
        on_progress: Callable[[str, int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Inspection:
        """Import a bank file: read-only until one commit (engine/bankfile/importer.py)."""
        return self.importer.run(Path(path), on_progress, cancel)

    def remove_collection(self, label: str) -> Folder:
        """Forget an imported collection, its documents and chunks; NotFoundError if there is none."""
        for folder in self.catalog.folders("imported"):
            if str(folder.path) == label:
                self.catalog.remove_folder(folder.id)
                return folder
        raise NotFoundError(f"There is no imported collection named '{label}'.")

    def bank_stats(self) -> dict:
        stats = self.bank.stats()
        return {
            "memories": stats["records"],
            "profile": self.config.profile,
            "bytes_live": stats["live_bytes"],
            "bytes_on_disk": stats["file_bytes"],
            "budget_bytes": stats["budget"],
            "segments": stats["segments"],
            "by_profile": stats["by_profile"],
            "chunks": self.catalog.counts()["chunks"],
        }

    # --- folders and ingest -------------------------------------------------------------------------

    def folders(self) -> list[Folder]:
        return self.catalog.folders()

    def add_folder(self, path: str | Path) -> Folder:
        return add_folder(self.catalog, path)

    def remove_folder(self, path: str | Path) -> Folder:
        return remove_folder(self.catalog, path)

    def sync_memories(
        self,
        batch: int = 4,
        on_progress: Callable[[int, int], None] | None = None,
        stop: threading.Event | None = None,
    ) -> int:
        """Write the memories new chunks need and drop those no chunk needs; index them for retrieval.

        The work goes in batches of `batch` chunks, each one turn on the model (`Turns`): an answer waits
        for one batch at most, never for the backlog. Each batch is recorded in the catalog once stored, so
        an interruption (`stop`, a crash) loses no finished work. With no work it returns at once, without
        waiting for a turn: the caller (the watch) goes on reading the watcher and parsing during an
        answer, so a saved edit is ready to be written the moment that answer ends. on_progress(done,
        total) counts memories written; returns how many were written."""
        self.importer.resume(stop)  # an import a crash or a cancel left committed but not applied
        if not self.catalog.pending_memory_work(limit=1):
            return 0  # the watch's idle call, every half second: nothing to count or compact
        total = self.catalog.counts()["memories_to_write"] if on_progress is not None else 0
        written = 0
        while (stop is None or not stop.is_set()) and self.catalog.pending_memory_work(limit=1):
            with self.turns.batch(stop) as granted:
                if not granted:
                    break
                work = self.catalog.pending_memory_work(limit=batch)
                drops = [w.hash for w in work if w.action == "drop"]
                writes = [(w.hash, w.text) for w in work if w.action == "write" and w.text is not None]
                if not drops and not writes:
                    break
                if drops:
                    self.store.drop(drops)
                    self.retriever.delete(drops)
                    self.catalog.complete_memory_work(dropped=drops)
                if writes:
                    self.store.store(writes)
                    self.retriever.add(writes)
                    self.catalog.complete_memory_work(written=[h for h, _ in writes])
            written += len(writes)
            if writes and on_progress is not None:
                on_progress(written, max(total, written))
        self.retriever.compact()  # outside any turn: answers go on searching the index meanwhile
        return written

    def ingester(self, on_progress: Callable[[Progress], None] | None = None) -> Ingester:
        """An ingester in the model's tokens; how far its scans' walks are is kept for `status()`."""
        tok = self.tokenizer
        return Ingester(
            self.catalog, lambda text: len(tok.encode(text)), self.ingest_config, on_progress, self._walked
        )

    def _walked(self, scanning: Scanning | None) -> None:
        self.scanning = scanning

    def scan(
        self, path: str | Path | None = None, on_progress: Callable[[Progress], None] | None = None
    ) -> ScanReport:
        """Reconcile the watched folders (or the one at `path`) with the disk; parse and chunk the changes.
        The report's `failed` is every document of those folders that cannot be read, as the status lists
        them (those found before this scan, and those whose parsing failed, included)."""
        ingester = self.ingester(on_progress)
        chosen = None if path is None else [f for f in self.folders() if f.path in candidates(path)]
        report = ingester.scan(chosen)
        ingester.process_pending()
        scope = self.folders() if chosen is None else chosen
        report.failed = sum(any(p.is_relative_to(f.path) for f in scope) for p, _ in self.catalog.failures())
        return report

    def watch(
        self,
        stop: threading.Event,
        on_progress: Callable[[Progress], None] | None = None,
        on_memories: Callable[[int, int], None] | None = None,
    ) -> None:
        """Keep the catalog and the memories in step with the folders until `stop` is set, in this thread:
        scan, then follow the watcher, writing the memories each batch of parsed files needs. Memory writing
        waits while answers are in progress (`Turns`), and the parsing of further files with it."""
        self.ingester(on_progress).run(
            stop, between=lambda: self.sync_memories(on_progress=on_memories, stop=stop) > 0
        )

    def status(self) -> Status:
        """Folders, ingest progress and failures, as the catalog has them, and how far a scan's walk is: a
        read, nothing is written."""
        return Status.read(self.catalog, self.scanning)

    # --- chat ---------------------------------------------------------------------------------------

    @cached_property
    def sources(self) -> Sources:
        """What answers read: retrieved chunks, named through the catalog, and their memories."""
        return Sources(self.retriever, self.catalog, self.store)

    @cached_property
    def chat(self) -> Chat:
        rt = self.runtime
        prompt = prompt_format(rt.model.config.arch, rt.instruct)
        config = self.config
        return Chat(rt, self.sources, prompt, k=config.retrieved, reader=self.reader, reread=config.reread)

    def ask(
        self,
        question: str,
        mode: str = "memory",
        chat_id: int | None = None,
        cancel: threading.Event | None = None,
    ) -> Answer:
        """Answer from the documents, streamed; the question and, once streamed, the answer with its
        citations and what it read are saved in the chat `chat_id` (a new chat when None; NotFoundError
        when there is no such chat). Setting `cancel` stops this answer and no other: what was streamed is
        saved, marked stopped (`Answer.stopped`), as it is when streaming fails or is abandoned. Background
        memory writing waits while it generates (`turns`)."""
        cancel = cancel or threading.Event()
        answer = self.chat.ask(question, mode, self.config.max_answer_tokens, cancel=cancel)
        chat_id = chat_id if chat_id is not None else self.chats.new(question.strip()[:80])
        self.chats.add_message(chat_id, "user", question, mode)
        pieces = answer.pieces

        def withdrawn() -> str | None:
            return None if answer.withdrawn is None else json.dumps(asdict(answer.withdrawn))

        def saved() -> Iterator[str]:
            try:
                with self.turns.answer():
                    yield from pieces
            except BaseException:  # an error mid-stream, or the reader gone: the question keeps a reply
                answer.stopped = True
                with contextlib.suppress(NotFoundError):  # the chat deleted meanwhile: the error is the news
                    self.chats.add_message(
                        chat_id, "assistant", answer.text.strip(), mode, stopped=True, withdrawn=withdrawn()
                    )
                raise
            answer.stopped = cancel.is_set()  # decided once: what is saved and what the client is told
            cited = json.dumps([c.as_dict() for c in answer.citations])
            reads = json.dumps([r.as_dict() for r in answer.reads])
            self.chats.add_message(
                chat_id, "assistant", answer.text, mode, cited, reads, answer.stopped, withdrawn()
            )

        answer.pieces = saved()
        answer.chat_id = chat_id
        return answer

    # --- generation ---------------------------------------------------------------------------------

    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        cancel: threading.Event | None = None,
    ) -> Continuation:
        """Continue `prompt` as plain text, streaming pieces; setting `cancel` ends it early. Background
        work waits meanwhile, as for an answer."""
        if not prompt.strip():
            raise EmptyPromptError("The prompt is empty: there is nothing to continue.")
        tok = self.runtime.tokenizer
        gen = Generation(
            self.runtime.model,
            tok,
            tok.encode(prompt, bos=True),
            max_new_tokens=max_new_tokens,
            sampling=Sampling(temperature, top_p, seed),
            stop_ids=tok.stop_ids,
            cancel=cancel,
        )

        def pieces() -> Iterator[str]:
            with self.turns.answer():
                yield from gen.run()

        return Continuation(pieces(), gen)

    @property
    def description(self) -> str:
        c = self.runtime.model.config
        return f"{self.runtime.path.name} ({c.arch}, {c.n_layer} layers) on {self.runtime.model.device}"

    def close(self) -> None:
        """Save and close what was opened (the vector index is saved here besides its periodic saves).
        Each part is closed even when an earlier one fails to (the first failure is raised after)."""
        with contextlib.ExitStack() as parts:
            for name in ("catalog", "bank", "retriever"):  # closed in the reverse order: retriever first
                if name in self.__dict__:
                    parts.callback(self.__dict__.pop(name).close)
        for name in ("store", "sources", "chat", "chats"):  # they hold what was just closed
            self.__dict__.pop(name, None)
