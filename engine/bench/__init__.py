"""Named benchmarks: each returns its results and a Markdown table; both are written to
<output_dir>/<name>.json and <name>.md (a benchmark may add figures there too)."""

from __future__ import annotations

import json
from pathlib import Path

from engine.bench import engine_bench, qa_bench, retrieval_bench
from engine.errors import M3Error

BENCHMARKS = {"engine": engine_bench.run, "retrieval": retrieval_bench.run, "qa": qa_bench.run}


class UnknownBenchmarkError(M3Error):
    """No benchmark has the name asked for."""


def run_benchmark(
    name: str,
    output_dir: str | Path,
    model_path: str | Path | None = None,
    device: str | None = None,
    quick: bool = False,
    **options: object,
) -> tuple[dict, str]:
    """Run benchmark `name` (quick: a small slice; options: the benchmark's own, such as qa's `sample`),
    write its results into `output_dir`, return (results, table)."""
    if name not in BENCHMARKS:
        raise UnknownBenchmarkError(f"There is no benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}.")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results, table = BENCHMARKS[name](model_path, device, output_dir, quick, **options)
    (output_dir / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (output_dir / f"{name}.md").write_text(table + "\n")
    return results, table
