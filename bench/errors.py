"""Typed errors of the benchmarks. Each message is one sentence a user can act on."""

from ingest.errors import M3Error


class BenchmarkError(M3Error):
    """A benchmark cannot run or a command it measures failed."""


class ScreenTimeout(BenchmarkError):
    """An app driven in a terminal did not show what was awaited in time; `screen` is what it showed."""

    def __init__(self, what: str, screen: str):
        super().__init__(f"The app did not show {what} in time.")
        self.screen = screen


class UnknownBenchmarkError(M3Error):
    """No benchmark has the name asked for."""


class QADataError(M3Error):
    """A QA data file is missing, unreadable or not in the SQuAD format."""


class QADataMissingError(M3Error):
    """The QA data set is not where the benchmark looks for it."""
