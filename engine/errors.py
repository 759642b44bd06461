"""Typed errors of the engine. Each message is one sentence a user can act on."""


class M3Error(Exception):
    """Base of every error memory3 raises on purpose; the CLI prints its message and exits non-zero."""


class ModelLoadError(M3Error):
    """The model file is missing, unreadable, truncated or not a GGUF file."""


class UnsupportedModelError(M3Error):
    """The GGUF file is valid but holds an architecture or tensor type we cannot run."""


class EmptyPromptError(M3Error):
    """A prompt with no tokens to condition on was given."""


class MemoryFormatError(M3Error):
    """A memory does not fit the model or profile it is being attached to."""
