"""Typed errors of the benchmarks. Each message is one sentence a user can act on."""

from ingest.errors import M3Error


class BenchmarkError(M3Error):
    """A benchmark cannot run or a command it measures failed."""


class UnknownBenchmarkError(M3Error):
    """No benchmark has the name asked for."""


class QADataError(M3Error):
    """A QA data file is missing, unreadable or not in the SQuAD format."""


class QADataMissingError(M3Error):
    """The QA data set is not where the benchmark looks for it."""
