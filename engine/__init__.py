"""memory3's engine: everything that needs a model. The assistant uses only what is exported here."""

from engine.errors import M3Error
from engine.facade import Engine
from ingest.ingester import Progress

__all__ = ["Engine", "M3Error", "Progress"]
