"""Generation with a KV cache, streamed as text, re-reading explicit memories every 64 tokens.

Memory³'s schedule: the context after the sink is processed in chunks of 64 tokens (prompt and
generated alike). Before each chunk a retrieval callback gets a query (`Generation.query`: the question
while the prompt is read, then the text of the last 64 tokens) and returns the memories to attach for it.

The model steps are small functions in gpt-fast's shape (`prefill`, `decode_one`, `verify`); `Generation`
keeps the schedule around them. Greedy decoding drafts tokens by prompt lookup (Saxena 2023, "Prompt
Lookup Decoding"): answers copy spans of their sources, so the tokens that followed the last few generated
ones in the prompt or a source are proposed and checked in one forward pass; a step costs about as much
for a few rows as for one (it reads the same weights), and the output is what one-at-a-time greedy
decoding gives.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from engine.chat.citations import SourceMass
from engine.errors import EmptyPromptError
from engine.memory.attach import attach, place, span
from engine.memory.profiles import MemoryKV
from engine.memory.reader import MemoryReader
from engine.models.kv_cache import KVCache
from engine.models.tokenizer import Tokenizer
from engine.models.transformer import ForwardOut, Probe, Transformer

CHUNK_TOKENS = 64
DRAFT_TOKENS = 3  # drafted tokens checked per step at most: 4 rows cost 1.4x one here, 8 rows 2.2x
DRAFT_NGRAM = (3, 2)  # the longest and shortest run of last tokens looked up in the sources

Retrieve = Callable[[str], Sequence[MemoryKV]]


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0 is greedy
    top_p: float = 1.0
    seed: int | None = None


def sample(logits: torch.Tensor, sampling: Sampling, rng: torch.Generator | None) -> int:
    """Pick the next token from (vocab,) logits: argmax, or temperature then nucleus (top-p) sampling."""
    if sampling.temperature <= 0:
        return int(logits.argmax())
    # on the CPU: the seeded generator lives there, and one vocabulary row per token is cheap to move
    probs = torch.softmax(logits.float().cpu() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        outside = sorted_p.cumsum(-1) - sorted_p > sampling.top_p  # keep the smallest set reaching top_p
        sorted_p[outside] = 0
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    return int(torch.multinomial(probs / probs.sum(), 1, generator=rng))


def prefill(model: Transformer, cache: KVCache, ids: Sequence[int], start: int) -> torch.Tensor:
    """Read `ids` at positions start.. into `cache`; the logits (vocab,) of the token after the last."""
    return _forward(model, cache, ids, start, None, "last").logits[0, -1]


def decode_one(
    model: Transformer, cache: KVCache, token: int, pos: int, probe: Probe | None = None, exact: bool = False
) -> torch.Tensor:
    """Read one token at `pos`; the logits (vocab,) of the next (`exact`: every one through the full
    output head, as scoring needs; otherwise only the likeliest ones, Transformer.head)."""
    return _forward(model, cache, [token], pos, probe, "last", exact).logits[0, -1]


def verify(
    model: Transformer, cache: KVCache, ids: Sequence[int], start: int, probe: Probe | None = None
) -> torch.Tensor:
    """Read a few `ids` at positions start..; logits (len(ids), vocab) after each. The cache advances by
    len(ids): rewind `cache.length` to drop a rejected tail."""
    return _forward(model, cache, ids, start, probe, "all").logits[0]


def _forward(
    model, cache, ids: Sequence[int], start: int, probe: Probe | None, rows: str, exact: bool = False
) -> ForwardOut:
    device = model.device
    tokens = torch.tensor([list(ids)], device=device)
    pos = torch.arange(start, start + len(ids), device=device)[None]
    return model(tokens, pos, cache=cache, probe=probe, logits=rows, exact=exact)


def draft(context: Sequence[int], sources: Sequence[Sequence[int]], n: int) -> list[int]:
    """Up to n tokens that followed the last DRAFT_NGRAM tokens of `context` where that run last occurs
    in `sources` or earlier in `context` (prompt lookup); [] when it occurs nowhere."""
    if n <= 0:
        return []
    longest, shortest = DRAFT_NGRAM
    for size in range(min(longest, len(context)), shortest - 1, -1):
        key = list(context[-size:])
        for seq in (context[:-1], *sources):
            seq = list(seq)
            for i in range(len(seq) - size - 1, -1, -1):  # the latest occurrence with a token after it
                if seq[i] == key[0] and seq[i : i + size] == key:
                    return seq[i + size : i + size + n]
    return []


class _Held:
    """A probe that keeps attention weights until the drafted rows that were accepted are known."""

    def __init__(self, layers: frozenset[int]) -> None:
        self.layers = layers
        self.seen: list[tuple[int, torch.Tensor]] = []

    def observe(self, layer: int, weights: torch.Tensor) -> None:
        self.seen.append((layer, weights))

    def replay(self, probe: Probe, rows: int) -> None:
        for layer, weights in self.seen:
            probe.observe(layer, weights[..., :rows, :])


@dataclass
class Generation:
    """One generation's settings; `run()` yields text pieces as tokens are decided."""

    model: Transformer
    tokenizer: Tokenizer
    prompt: Sequence[int]  # with the sink first when memories are read
    max_new_tokens: int = 128
    sampling: Sampling = Sampling()
    stop_ids: frozenset[int] = frozenset()
    retrieve: Retrieve | None = None
    question: str = ""  # what memories are retrieved with while the prompt is read
    sink_len: int = 0
    memory_slots: int = 0  # room for the largest set of memory tokens one chunk may attach
    chunk: int = CHUNK_TOKENS
    cancel: threading.Event | None = None
    text_sources: Sequence[tuple[str, int, int]] = ()  # (key, start, end): prompt spans read as sources (RAG)
    cite: bool = False  # measure the attention the generated tokens pay to each source
    lookup: bool = True  # greedy only: draft tokens from the prompt and `sources` (prompt lookup)
    reader: MemoryReader | None = None  # how attached memories are read (None: as the model reads text)

    def __post_init__(self) -> None:
        if len(self.prompt) <= self.sink_len:
            raise EmptyPromptError("The prompt is empty: there is nothing to answer.")
        self.tokens: list[int] = []  # generated ids
        self.attached: list[list[MemoryKV]] = []  # memories attached per chunk, in order
        self.steps: list[int] = []  # before each retrieval: how many body and reply tokens were read
        layers = self.model.global_layers  # citations count these (citations.SourceMass)
        self._mass = SourceMass(self.memory_slots, self.text_sources, layers) if self.cite else None
        self._placed: tuple[list[MemoryKV], list[int]] | None = None  # memories attached last, where
        self._after_prompt: tuple | None = None  # what score() rewinds to
        self.sources_ids: list[list[int]] = []  # token ids of the sources read as memories (for drafting)
        self.drafted = self.accepted = 0  # drafted tokens checked, and those that were right

    def sources(self) -> list[tuple[str, float]]:
        """(key, share) of each source by the attention the generated tokens paid to it, largest first."""
        return self._mass.shares() if self._mass is not None else []

    @torch.inference_mode()
    def run(self) -> Iterator[str]:
        rng = torch.Generator().manual_seed(self.sampling.seed) if self.sampling.seed is not None else None
        cache, history, fed, next_pos, logits = self._read_prompt()
        stream = self.tokenizer.stream()
        drafting = self.lookup and self.sampling.temperature <= 0
        while len(self.tokens) < self.max_new_tokens and not self._cancelled():
            token = sample(logits, self.sampling, rng)
            if token in self.stop_ids:
                break
            self.tokens.append(token)
            if text := stream.push(token):
                yield text
            if len(self.tokens) == self.max_new_tokens:
                break
            accepted, logits = self._advance(cache, history, token, fed, next_pos, self._mass, drafting)
            fed, next_pos = fed + 1 + len(accepted), next_pos + 1 + len(accepted)
            done = False
            for token in accepted:  # drafted tokens greedy decoding confirmed, in order
                if done := token in self.stop_ids:
                    break
                self.tokens.append(token)
                if text := stream.push(token):
                    yield text
                if done := len(self.tokens) == self.max_new_tokens:
                    break
            if done:
                break
        tail = stream.flush()
        if tail:
            yield tail

    def _read_prompt(self) -> tuple[KVCache, list[int], int, int, torch.Tensor | None]:
        """Read the prompt into a new cache (attaching memories a chunk at a time when reading them); returns
        the cache, the history (body tokens), body tokens read, the next position and the logits after the
        last token read (None when cancelled before any). Read to its end, it is what `score()` rewinds to."""
        model = self.model
        body = list(self.prompt[self.sink_len :])
        history = list(body)  # body and generated tokens: what later retrieval queries are cut from
        cache = model.new_cache(len(self.prompt) + self.max_new_tokens, self.memory_slots)
        if self.sink_len:
            prefill(model, cache, self.prompt[: self.sink_len], 0)
        next_pos = self.sink_len
        if self.retrieve is not None:
            first = self._read(history, 0)
            next_pos += span(first)  # the first chunk sits right after its memories, as text would
            self._attach(cache, first, next_pos)

        fed, logits = 0, None
        while fed < len(body) and not self._cancelled():  # prefill, a chunk at a time when reading memories
            n = self.chunk - fed % self.chunk if self.retrieve else len(body)
            self._maybe_reattach(cache, history, fed, next_pos)
            piece = body[fed : fed + n]
            out = _forward(model, cache, piece, next_pos, None, "last")
            logits, last = out.logits[0, -1], out.hidden[0, -1:].clone()  # the state score() starts from
            fed, next_pos = fed + len(piece), next_pos + len(piece)

        if fed == len(body) and fed:  # read to its end (not cancelled): what score() rewinds to
            self._after_prompt = (cache, cache.length, last, fed, next_pos, list(history), self._placed)
        return cache, history, fed, next_pos, logits

    def _cancelled(self) -> bool:
        """Checked before every decode step and every 64-token chunk of the prompt: a stop takes effect
        within one step (a step may confirm up to DRAFT_TOKENS drafted tokens besides its own; a prompt
        read as text in one piece, as in RAG mode, is read to its end first)."""
        return self.cancel is not None and self.cancel.is_set()

    @torch.inference_mode()
    def score(self, tokens: Sequence[int]) -> float:
        """Summed log-probability of `tokens` as the reply instead of the generated one (teacher forcing).

        The cache `run()` filled is rewound to the end of the prompt, with the memories attached there, and
        the tokens go through the same re-reading schedule: scoring costs the reply, not a second prefill.
        Every distribution comes through the full output head, not the shortlist decoding uses. Before any
        `run()`, the prompt is read here (nothing is generated): a reply scored in a context of its own.
        """
        if self._after_prompt is None:
            self._read_prompt()
        if self._after_prompt is None:
            raise RuntimeError("score() reads the whole prompt first, and this generation was cancelled")
        if len(tokens) > self.max_new_tokens:
            raise ValueError(f"a reply of {len(tokens)} tokens exceeds max_new_tokens={self.max_new_tokens}")
        cache, length, last, fed, next_pos, history, placed = self._after_prompt
        cache.length, history = length, list(history)
        if placed is not None:
            attach(self.model, cache, *placed, self.reader)
        logits = self.model.head(last, exact=True)[-1]
        total = 0.0
        for i, token in enumerate(tokens):
            total += float(torch.log_softmax(logits.float(), dim=-1)[token])
            if i + 1 < len(tokens):
                _, logits = self._advance(cache, history, token, fed, next_pos, exact=True)
                fed, next_pos = fed + 1, next_pos + 1
        return total

    def query(self, history: list[int], fed: int) -> str:
        """What the reading before body token `fed` retrieves with. history: the body, then the reply.

        The question while the prompt is read: a window of our own prompt template says less about the
        user's need than the question does. From the reply on, the text of the last `chunk` tokens.
        """
        if fed < len(self.prompt) - self.sink_len:
            return self.question
        return self.tokenizer.decode(history[fed - self.chunk : fed])

    def _advance(
        self, cache, history, token: int, fed: int, next_pos: int, probe=None, drafting=False, exact=False
    ) -> tuple[list[int], torch.Tensor]:
        """Feed one reply token (re-reading memories first at a chunk boundary) and, when drafting, the
        tokens prompt lookup proposes after it (`exact`: see `decode_one`). Returns the drafted tokens
        greedy decoding confirms and the logits after the last token kept; the cache keeps exactly the
        tokens returned."""
        history.append(token)
        self._maybe_reattach(cache, history, fed, next_pos)
        guesses = self._guesses(history, fed) if drafting else []
        if not guesses:
            return [], decode_one(self.model, cache, token, next_pos, probe, exact)
        held, length = (_Held(probe.layers) if probe is not None else None), cache.length
        logits = verify(self.model, cache, [token, *guesses], next_pos, held)
        picks = logits.argmax(-1).tolist()  # picks[i]: the greedy token after the i-th one fed
        n = 0
        while n < len(guesses) and picks[n] == guesses[n]:
            n += 1
        cache.length = length + 1 + n
        if held is not None:  # the rows one-at-a-time decoding would have read: none from a stop token on
            stop = next((i for i, t in enumerate(guesses[:n]) if t in self.stop_ids), n)
            held.replay(probe, 1 + stop)
        history.extend(guesses[:n])
        self.drafted, self.accepted = self.drafted + len(guesses), self.accepted + n
        return guesses[:n], logits[n]

    def _guesses(self, history: list[int], fed: int) -> list[int]:
        """Tokens to check after the last of `history` (body token `fed`): never past the reply's limit,
        nor past the next re-reading of memories (which changes what the following tokens see)."""
        room = min(DRAFT_TOKENS, self.max_new_tokens - len(self.tokens) - 1)  # the last is never read
        if self.retrieve is not None:
            room = min(room, self.chunk - 1 - fed % self.chunk)
        context = [*self.prompt[: self.sink_len], *history]
        return draft(context, self.sources_ids, room)

    def _maybe_reattach(self, cache, history: list[int], fed: int, next_pos: int) -> None:
        if self.retrieve is None or fed == 0 or fed % self.chunk:
            return
        self._attach(cache, self._read(history, fed), next_pos)

    def _read(self, history: list[int], fed: int) -> list[MemoryKV]:
        """The memories the reading before body token `fed` retrieves (its step recorded first)."""
        self.steps.append(fed)
        return list(self.retrieve(self.query(history, fed)))

    def _attach(self, cache, memories: list[MemoryKV], end: int) -> None:
        self._placed = (memories, place(memories, end, self.sink_len))
        layout = attach(self.model, cache, *self._placed, self.reader)
        self.attached.append(memories)
        if self._mass is not None:
            self._mass.read(layout)
