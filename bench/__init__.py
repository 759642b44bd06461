"""Named benchmarks: each returns its results and a Markdown table; both are written to
<output_dir>/<name>.json and <name>.md (a benchmark may add figures there too)."""

from __future__ import annotations

import importlib
from pathlib import Path

from bench.errors import BenchmarkError, UnknownBenchmarkError
from bench.output import write_results
from ingest.paths import Home

# name: the module whose `run` it is, imported when asked for (they load torch: importing `bench` for a
# light part of it, such as bench.soak_run, does not)
BENCHMARKS = {
    "engine": "engine_bench",
    "retrieval": "retrieval_bench",
    "qa": "qa_bench",
    "tui": "tui_bench",
    "bank": "bank_bench",
    "soak": "soak_bench",
    "editing": "editing_bench",
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
    from bench.engine_settings import engine_settings
    from engine.models.runtime import default_model_path

    engine_settings(options.get("profile"), options.get("reader"))  # a wrong one: before anything is written
    output_dir = _results_folder(output_dir)
    model_path = Path(model) if model else default_model_path(home.cache)
    run = importlib.import_module(f"bench.{BENCHMARKS[name]}").run
    results, table = run(home, model_path, device, output_dir, quick, **options)
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
    from bench import reader_training
    from engine.models.runtime import default_model_path

    output_dir = _results_folder(output_dir)
    model_path = Path(model) if model else default_model_path(home.cache)
    return reader_training.run(home, model_path, device, output_dir, reader_path, quick, steps, profile)
