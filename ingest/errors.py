"""The root of memory3's typed errors, here because every layer (ingest, engine, assistant) raises them."""


class M3Error(Exception):
    """Base of every error memory3 raises on purpose; the CLI prints its message and exits non-zero."""


class ParseError(M3Error):
    """A document could not be turned into text; the message is the readable reason."""


class EncryptedDocumentError(ParseError):
    """The document is locked with a password we do not have."""


class TooLargeError(ParseError):
    """A file, or the text made of it, is over the size limit."""


class UnsupportedFormatError(ParseError):
    """No parser handles this kind of file."""


class FolderError(M3Error):
    """A folder cannot be added or removed: missing, not a directory, already watched, or not watched."""


class CatalogError(M3Error):
    """The catalog file cannot be used: unreadable, corrupt, or written by a newer memory3."""


class ConfigError(M3Error):
    """config.toml cannot be read or holds a value of the wrong kind."""


class NotFoundError(M3Error):
    """No such chat, passage, failed document, answer or watched folder (HTTP 404 at the service)."""
