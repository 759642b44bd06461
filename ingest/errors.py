"""The root of memory3's typed errors, here because every layer (ingest, engine, assistant) raises them."""


class M3Error(Exception):
    """Base of every error memory3 raises on purpose; the CLI prints its message and exits non-zero."""
