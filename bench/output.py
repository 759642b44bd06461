"""A benchmark's results on disk: <output_dir>/<name>.json and <name>.md."""

from __future__ import annotations

import json
from pathlib import Path

from ingest.atomic import write_atomic


def write_results(output_dir: Path, name: str, results: dict, table: str) -> None:
    write_atomic(output_dir / f"{name}.json", json.dumps(results, indent=2) + "\n")
    write_atomic(output_dir / f"{name}.md", table + "\n")
