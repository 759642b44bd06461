"""The model's own tokenizer, read from the same GGUF by llama.cpp (a vocab-only load is exact)."""

from __future__ import annotations

import codecs
import os
from pathlib import Path

import llama_cpp

from engine.errors import ModelLoadError


class Tokenizer:
    def __init__(self, path: str | Path):
        from llama_cpp import Llama

        try:
            with open(os.devnull, "w") as devnull, _redirect_stderr(devnull):
                self._llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
        except Exception as exc:
            raise ModelLoadError(f"Could not read the tokenizer of {path} ({exc}).") from exc
        self.path = Path(path)
        self._vocab = self._llm._model.vocab
        self.bos_id = int(self._llm.token_bos())
        self.eos_id = int(self._llm.token_eos())
        self.vocab_size = int(self._llm.n_vocab())
        self.stop_ids = frozenset(self._stop_ids())

    def encode(self, text: str, bos: bool = False, special: bool = False) -> list[int]:
        """Token ids of text. special=False keeps control-token look-alikes in documents as plain text."""
        if not text:
            return [self.bos_id] if bos else []
        # A buffer sized to the text is almost always enough (a token covers a byte or more; a space prefix
        # and BOS add two); llama.cpp returns minus the size it needs when not. The wrapper's tokenize()
        # allocates a context-sized buffer on every call, which doubled the time of chunking.
        data = text.encode("utf-8")
        room = len(data) + 3
        for _ in range(2):
            buffer = (llama_cpp.llama_token * room)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buffer, room, bos, special)
            if n >= 0:
                return buffer[:n]
            room = -n
        raise ModelLoadError(f"The tokenizer of {self.path} failed on a text of {len(data)} bytes.")

    def decode(self, ids: list[int]) -> str:
        return self.piece_bytes(ids).decode("utf-8", errors="replace")

    def piece_bytes(self, ids: list[int]) -> bytes:
        return self._llm.detokenize(ids) if ids else b""

    def stream(self) -> TextStream:
        return TextStream(self)

    def _stop_ids(self) -> set[int]:
        ids = {self.eos_id}
        for name in ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|endoftext|>"):
            tok = self._llm.tokenize(name.encode(), add_bos=False, special=True)
            if len(tok) == 1:
                ids.add(int(tok[0]))
        return ids


class TextStream:
    """Turns token ids into text pieces, holding back bytes of a character split across tokens."""

    def __init__(self, tokenizer: Tokenizer):
        self._tok = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._decoder.decode(self._tok.piece_bytes([token_id]))

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


class _redirect_stderr:
    """llama.cpp prints from C; silence file descriptor 2 itself, not just sys.stderr."""

    def __init__(self, target):
        self._target = target

    def __enter__(self):
        self._saved = os.dup(2)
        os.dup2(self._target.fileno(), 2)

    def __exit__(self, *exc):
        os.dup2(self._saved, 2)
        os.close(self._saved)
