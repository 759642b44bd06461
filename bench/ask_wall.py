"""Wall time of `m3 ask` as a user meets it: cold (no service runs, so the command starts one and the model
loads) and warm (the service is up: no model load). Measured on the real command, in a home of its own
holding the sample folder, so nothing of the user's is touched."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.errors import BenchmarkError

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "sample"
QUESTION = "Who discovered oxygen in Uppsala?"
TIMEOUT_S = 600


def m3_command() -> list[str]:
    """The installed `m3` console script beside this Python (the one a user runs)."""
    script = Path(sys.executable).with_name("m3")
    if not script.exists():
        raise BenchmarkError(f"The m3 command is not installed beside {sys.executable}; run `make setup`.")
    return [str(script)]


def _run(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(seconds to the first byte of output, seconds to exit) of one `m3` command."""
    started = time.perf_counter()
    proc = subprocess.Popen([*m3_command(), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.read(1)
    first = time.perf_counter() - started
    out, err = proc.communicate(timeout=TIMEOUT_S)
    if proc.returncode != 0:
        raise BenchmarkError(f"`m3 {' '.join(args)}` failed: {err.decode(errors='replace').strip()}")
    return first, time.perf_counter() - started


def measure(model_path: Path, device: str | None, cold_repeats: int, warm_repeats: int) -> dict:
    """Medians over repeats of `m3 ask`: {"cold": s, "warm": s, "first_output": {"cold": s, "warm": s}}.

    Each cold run follows an `m3 stop`; the warm runs follow the last cold one. The sample folder is
    ingested first (memories written), so every run answers from the same bank."""
    with tempfile.TemporaryDirectory(prefix="m3-ask-bench-") as tmp:
        folder = Path(tmp) / "sample"
        shutil.copytree(SAMPLE, folder)
        env = {**os.environ, "M3_HOME": str(Path(tmp) / "home"), "M3_MODEL": str(model_path)}
        device_args = ["--device", device] if device else []
        ask = [*device_args, "ask", QUESTION]
        try:
            _run([*device_args, "ingest", str(folder)], env)
            cold = []
            for _ in range(cold_repeats):
                _run(["stop"], env)
                cold.append(_run(ask, env))
            warm = [_run(ask, env) for _ in range(warm_repeats)]
        finally:
            subprocess.run([*m3_command(), "stop"], env=env, capture_output=True, timeout=TIMEOUT_S)
    return {
        "cold": statistics.median(total for _, total in cold),
        "warm": statistics.median(total for _, total in warm),
        "first_output": {
            "cold": statistics.median(first for first, _ in cold),
            "warm": statistics.median(first for first, _ in warm),
        },
    }
