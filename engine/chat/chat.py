"""Answering a question from the user's documents, in one of three modes with otherwise identical prompts.

- `memory`: Memory³. Every 64 tokens the last 64 tokens (the question, while the prompt is read: see
  `Generation.query`) retrieve up to k chunks whose memories are attached to attention; nothing is read
  as text.
- `rag`: the chunks the question retrieves, as text between the sink and the question, in the place and
  order the memories would take (so that with exact memories both modes would see the same thing).
- `none`: the same prompt with no sources, to measure what the documents add.

A memory-mode answer that names what neither the question nor any source it read says (`grounding`) is
withdrawn once it has streamed, and the same question is answered again in rag mode, reading the sources
as text (`Answer.withdrawn` says so; `reread=False` keeps the memory answer).

Chunks and their memories come from `Sources`; citations (engine/chat/citations.py) are the sources the
answer attended to, ranked by the attention its tokens paid to each per key token. What the model read is
kept too, one `Reading` per retrieval: each re-reading in memory mode, the question's in rag mode, none in
none mode.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from engine.chat.citations import Citation, cite
from engine.chat.generation import CHUNK_TOKENS, Generation, Sampling
from engine.chat.grounding import unsupported
from engine.chat.prompt import PromptFormat
from engine.chat.sources import Chunk, Reading, Sources
from engine.errors import EmptyPromptError, UnknownModeError
from engine.memory.profiles import MAX_REFERENCE_TOKENS, MemoryKV
from engine.memory.reader import MemoryReader
from engine.models.runtime import Runtime

MODES = ("memory", "rag", "none")
GREEDY = Sampling()


@dataclass(frozen=True)
class Withdrawn:
    """A memory-mode answer taken back: its text, and the names and figures in it that neither the
    question nor any source it read says (`grounding.unsupported`)."""

    text: str
    names: list[str]


@dataclass
class Answer:
    """A streamed answer: iterate for text pieces; `text`, `citations` and `reads` are complete afterwards."""

    question: str
    mode: str
    pieces: Iterator[str]
    text: str = ""
    citations: list[Citation] = field(default_factory=list)
    reads: list[Reading] = field(default_factory=list)  # one per retrieval, in order
    chat_id: int | None = None  # where the engine saved it
    withdrawn: Withdrawn | None = None  # set, then an empty piece, before the rag re-read (module doc)
    stopped: bool = False  # ended by its cancel event before it finished (set by Engine.ask)
    tokens: int = 0  # generated, stop token excluded (a withdrawn answer's and its re-read's together)
    _gen: Generation | None = field(default=None, repr=False)
    _lead: str = ""

    def __iter__(self) -> Iterator[str]:
        yield from self.pieces

    def logprob(self, reply: str) -> tuple[float, int]:
        """(summed log-probability, tokens) of `reply` given instead of this answer, in the very context
        this answer was read in (once streamed): how close the model came to another answer."""
        ids = self.reply_ids(reply)
        return self._streamed().score(ids), len(ids)

    def reply_ids(self, reply: str) -> list[int]:
        """`reply` as the token ids this answer's reply would be (cut to its length limit)."""
        gen = self._streamed()
        return gen.tokenizer.encode(self._lead + reply.strip())[: gen.max_new_tokens]

    def _streamed(self) -> Generation:
        if self._gen is None:
            raise RuntimeError("An answer is scored against once it has been streamed (iterated).")
        return self._gen


class Chat:
    def __init__(
        self,
        runtime: Runtime,
        sources: Sources,
        prompt: PromptFormat,
        k: int = 5,
        interval: int = CHUNK_TOKENS,
        reader: MemoryReader | None = None,
        focus: bool = True,
        reread: bool = True,
    ):
        """k: chunks retrieved per reading; interval: tokens between memory re-readings; reader: how memory
        mode reads its memories (None: as the model reads text); focus: read only those of the k chunks
        that hold the query's rarest word, when some do (`Retriever.focus`), else all k (benchmarks that
        time reading k chunks); reread: answer again from text when a memory answer names what nothing
        it read says (the module's doc)."""
        self.runtime, self.sources, self.prompt = runtime, sources, prompt
        self.k, self.interval, self.reader, self.focus, self.reread = k, interval, reader, focus, reread

    def ask(
        self,
        question: str,
        mode: str = "memory",
        max_new_tokens: int = 128,
        sampling: Sampling = GREEDY,
        cancel: threading.Event | None = None,
    ) -> Answer:
        """The answer to `question`, streamed when iterated. UnknownModeError and EmptyPromptError are raised
        here; everything else happens as the pieces are asked for: retrieval included, so an answer
        streamed inside its turn on the model (`Engine.ask`) reads what background work wrote before.
        A memory answer withdrawn (`Answer.withdrawn`) is followed by the pieces of its rag re-read."""
        _check(question, mode)
        answer = Answer(question, mode, iter(()), _lead=self.prompt.lead)

        def pieces() -> Iterator[str]:
            options = dict(max_new_tokens=max_new_tokens, sampling=sampling, cancel=cancel)
            gen, readings = self.generation(question, mode, **options)
            answer._gen = gen
            yield from self._stream(gen, answer, readings)
            names = self._unsupported(answer, cancel)
            if not names:
                return
            kept = (answer.text, answer.citations, answer.reads, answer._gen)
            answer.withdrawn, answer.text = Withdrawn(answer.text, names), ""
            yield ""  # the withdrawal is news at once, before the re-read's prefill
            gen, again = self.generation(question, "rag", **options)
            answer._gen = gen
            yield from self._stream(gen, answer, readings + again)
            if not answer.text and cancel is not None and cancel.is_set():  # stopped before it said a word
                answer.text, answer.citations, answer.reads, answer._gen = kept

        answer.pieces = pieces()
        return answer

    def generation(
        self,
        question: str,
        mode: str,
        max_new_tokens: int = 128,
        sampling: Sampling = GREEDY,
        cancel: threading.Event | None = None,
        stop: bool = True,
    ) -> tuple[Generation, list[Reading]]:
        """The generation that answers `question` in `mode`, and its readings (filled as it runs).
        stop=False runs on through stop tokens (for timing a fixed number of tokens)."""
        _check(question, mode)
        tok, sink = self.runtime.tokenizer, self.runtime.sink
        body = tok.encode(self.prompt.body(question), special=self.prompt.special)
        readings: list[Reading] = []

        def retrieve(query: str) -> list[MemoryKV]:
            chunks = self._search(query)
            # called by `gen` (assigned below) once it has recorded the step of this reading
            readings.append(Reading(gen.steps[-1], query, chunks[::-1]))
            gen.sources_ids = [tok.encode(c.text) for c in chunks]  # what drafting copies from
            return self.sources.recall(chunks)

        options = dict(
            max_new_tokens=max_new_tokens,
            sampling=sampling,
            stop_ids=tok.stop_ids if stop else frozenset(),
            cancel=cancel,
            sink_len=len(sink),
            cite=mode != "none",
        )
        if mode == "memory":
            gen = Generation(
                self.runtime.model,
                tok,
                sink + body,
                retrieve=retrieve,
                question=question,
                memory_slots=self.k * MAX_REFERENCE_TOKENS,
                chunk=self.interval,
                reader=self.reader,
                **options,
            )
        else:
            prompt, spans = list(sink), []
            chunks = self._search(question) if mode == "rag" else []
            if mode == "rag":
                readings.append(Reading(0, question, chunks[::-1]))
            for chunk in chunks:
                ids = tok.encode(chunk.text)
                spans.append((chunk.hash, len(prompt), len(prompt) + len(ids)))
                prompt += ids
            gen = Generation(self.runtime.model, tok, prompt + body, text_sources=spans, **options)
        return gen, readings

    def support(self, answer: Answer, confidence: float | None = None) -> float | None:
        """How much what `answer` read made it likelier: its mean log-probability per token (nats) in its
        own context minus in `none` mode (the same prompt without sources). An answer the model gives
        just as readily without the sources is not supported by them: the signal `m3 bench qa` calibrates
        abstention on (README "Abstention"). None for a `none`-mode answer, which read nothing.

        confidence: `Chat.confidence(answer)` when already measured (else measured here). Costs a prefill
        of the prompt without sources and the answer's tokens twice (teacher forcing)."""
        if answer.mode == "none":
            return None
        ids = answer.reply_ids(answer.text)
        gen, _ = self.generation(answer.question, "none", max_new_tokens=len(ids))
        own = self.confidence(answer) if confidence is None else confidence
        return own - gen.score(ids) / len(ids)

    @staticmethod
    def confidence(answer: Answer) -> float:
        """The answer's own mean log-probability per token (nats) in the context it was read in: how
        readily the model gave it. Costs the answer's tokens once more (teacher forcing)."""
        total, n = answer.logprob(answer.text)
        return total / n

    def _unsupported(self, answer: Answer, cancel: threading.Event | None) -> list[str]:
        """What a finished memory answer names that nothing it read says (none for other modes, a stopped
        answer, or one that read no source: there is no text to read it again from)."""
        if answer.mode != "memory" or not self.reread or (cancel is not None and cancel.is_set()):
            return []
        read = [c.text for r in answer.reads for c in r.chunks]
        return unsupported(answer.text, [answer.question, *read]) if read else []

    def _search(self, query: str) -> list[Chunk]:
        """The retrieved chunks (with `focus`, those naming what the query names), in reading order: the
        best one last, right before the question.
        (Placed first, right after the sink, a source draws attention for its place rather than its
        content, which blurred citations in our tests; nearest to the question it is read best.)"""
        return self.sources.search(query, self.k, focus=self.focus)[::-1]

    def _stream(self, gen: Generation, answer: Answer, readings: list[Reading]) -> Iterator[str]:
        """Yield the answer's text up to the first stop string or loop, then fill in its citations and
        what it read."""
        text = ""
        for piece in gen.run():
            text += piece
            if loop_start(text) is not None:  # already shown, so kept; only the rest of the loop is spared
                yield text[len(answer.text) :]
                answer.text = text
                break
            cut = stop_index(text, self.prompt.stop)
            if cut is not None:
                new = text[len(answer.text) : cut]
                answer.text = text[:cut]
                if new:
                    yield new
                break
            yield text[len(answer.text) :]
            answer.text = text
        answer.text = answer.text.strip()
        answer.tokens += len(gen.tokens)
        answer.reads = list(readings)  # a later score() reads again: those are not this answer's
        answer.citations = cite(gen.sources(), {c.hash: c for r in answer.reads for c in r.chunks})


def _check(question: str, mode: str) -> None:
    if mode not in MODES:
        raise UnknownModeError(f"There is no chat mode {mode!r}; choose memory, rag or none.")
    if not question.strip():
        raise EmptyPromptError("The question is empty.")


def stop_index(text: str, stops: Sequence[str]) -> int | None:
    """Where the answer ends: the first stop string once the answer has begun (leading space skipped)."""
    start = len(text) - len(text.lstrip())
    if start == len(text):
        return None
    hits = [i for stop in stops if (i := text.find(stop, start)) != -1]
    return min(hits) if hits else None


LOOP_REPEATS = 8  # a unit of text this many times in a row is a loop, not an answer ("0000000000...")


def loop_start(text: str, longest_unit: int = 12) -> int | None:
    """Where a degenerate loop at the end of `text` begins (after its first unit), if there is one.

    Small base models sometimes repeat one token or phrase until the length limit; nothing after the
    first copy carries information, so generation stops there (what was streamed stays shown).
    """
    for unit in range(1, longest_unit + 1):
        n = unit * LOOP_REPEATS
        if len(text) >= n and text[-n:] == text[-unit:] * LOOP_REPEATS and text[-unit:].strip():
            start = len(text) - n
            while start >= unit and text[start - unit : start] == text[-unit:]:
                start -= unit
            return start + unit
    return None
