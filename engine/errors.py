"""Typed errors of the engine. Each message is one sentence a user can act on."""

from ingest.errors import M3Error

__all__ = ["M3Error", "ModelLoadError", "UnsupportedModelError", "EmptyPromptError", "DeviceError"]


class ModelLoadError(M3Error):
    """The model file is missing, unreadable, truncated or not a GGUF file."""


class UnsupportedModelError(M3Error):
    """The GGUF file is valid but holds an architecture or tensor type we cannot run."""


class EmptyPromptError(M3Error):
    """A prompt with no tokens to condition on was given."""


class DeviceError(M3Error):
    """The device asked for does not exist or is not present on this machine."""


class UnknownProfileError(M3Error):
    """The configured memory profile does not exist."""


class UnknownModeError(M3Error):
    """A chat mode other than memory, rag or none was asked for."""


class RetrievalError(M3Error):
    """The retrieval store (its database or vector index) cannot be used as it is."""


class IndexDamagedError(RetrievalError):
    """The vector index folder is unreadable, truncated or inconsistent with its meta.json."""


class IndexMismatchError(RetrievalError):
    """The vector index folder was made for another embedder or vector dimension."""


class BankError(M3Error):
    """The memory bank cannot be used: its folder or index is unreadable, or written by a newer memory3."""


class BankCorruptError(BankError):
    """A stored memory or bank record is damaged; the memory can be rebuilt from its text."""


class ReaderFileError(M3Error):
    """A memory reader file is missing, not a reader, or was trained for another model."""


class ReaderMismatchError(ReaderFileError):
    """A memory reader file was trained for another model than the one loaded."""
