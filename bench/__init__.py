"""Named benchmarks: each returns its results and a Markdown table; both are written to
<output_dir>/<name>.json and <name>.md (a benchmark may add figures there too)."""

from __future__ import annotations

from pathlib import Path

from bench import (
    bank_bench,
    editing_bench,
    engine_bench,
    qa_bench,
    reader_training,
    retrieval_bench,
    soak_bench,
    tui_bench,
)
from bench.errors import BenchmarkError, UnknownBenchmarkError
from bench.output import write_results
from engine.models.runtime import default_model_path
from ingest.paths import Home

BENCHMARKS = {
    "engine": engine_bench.run,
    "retrieval": retrieval_bench.run,
    "qa": qa_bench.run,
    "tui": tui_bench.run,
    "bank": bank_bench.run,
    "soak": soak_bench.run,
    "editing": editing_bench.run,
}


def run_benchmark(
    name: str,
    output_dir: str | Path,
    home: Home,
    model: str | Path | None = None,
    device: str | None = None,
    quick: bool = False,
    **options: object,
) -> tuple[dict, str]:
    """Run benchmark `name` (quick: a small slice; options: the benchmark's own, such as qa's `sample`),
    write its results into `output_dir`, return (results, table). `home` lends its cache (the assembled
    model, the exported embedder); each benchmark keeps its data in a temporary home of its own (the soak:
    in a run folder of the data folder, to be resumed after a stop)."""
    if name not in BENCHMARKS:
        raise UnknownBenchmarkError(f"There is no benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}.")
    output_dir = _results_folder(output_dir)
    model_path = Path(model) if model else default_model_path(home.cache)
    results, table = BENCHMARKS[name](home, model_path, device, output_dir, quick, **options)
    write_results(output_dir, name, results, table)  # the soak has written them already: the same bytes
    return results, table


def _results_folder(output_dir: str | Path) -> Path:
    """The folder, made: before any model loads, a run that cannot write its results is not started."""
    output_dir = Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchmarkError(f"Cannot write the results into {output_dir}: {exc.strerror}.") from exc
    return output_dir


def train_reader(
    output_dir: str | Path,
    home: Home,
    model: str | Path | None = None,
    device: str | None = None,
    reader_path: Path | None = None,
    quick: bool = False,
    steps: int | None = None,
    profile: str | None = None,
) -> tuple[dict, str]:
    """`m3 train reader`: bench/reader_training.py, with the results folder checked before any model loads."""
    output_dir = _results_folder(output_dir)
    model_path = Path(model) if model else default_model_path(home.cache)
    return reader_training.run(home, model_path, device, output_dir, reader_path, quick, steps, profile)
