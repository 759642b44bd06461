"""Measurements that need a fresh process: model load time and the engine's resident memory.

`m3 bench engine` runs this module as a child (`python -m bench.engine_process load|rss ...`), which
prints one JSON object; a process of its own is the only honest way to see a cold import, an empty
weight cache, or a peak of resident memory that earlier work in the bench did not set.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.errors import BenchmarkError

TIMEOUT_S = 900
QUESTION = "Who discovered oxygen in Uppsala?"


def child(*args: str) -> dict:
    """Run this module with `args` in a fresh Python; its JSON result."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.engine_process", *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            cwd=Path(__file__).resolve().parents[1],
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchmarkError(f"The bench's {args[0]} child did not finish in {TIMEOUT_S} s.") from exc
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise BenchmarkError(f"The bench's {args[0]} child failed: {last}")
    return json.loads(lines[-1])


def _load(model: str, device: str, cache: str, decode_weights: str) -> dict:
    """Seconds for Runtime.load in this fresh process (torch already imported, as in the service)."""
    import torch

    from engine.models.runtime import Runtime
    from engine.threads import compute_threads

    torch.set_num_threads(compute_threads())
    started = time.perf_counter()
    run_device = None if device == "auto" else device
    Runtime.load(model, device=run_device, cache=Path(cache), decode_weights=decode_weights)
    return {"load_s": time.perf_counter() - started}


def _rss(model: str, device: str, cache: str, decode_weights: str, sample: str) -> dict:
    """Resident memory (MiB) of an engine with the model loaded: idle, then the peak while it ingests
    `sample` (memories written, embedded, indexed), then the peak while it answers a question."""
    import torch

    from engine.facade import Engine
    from engine.models.runtime import Runtime
    from engine.retrieval.embedder import Embedder
    from engine.threads import compute_threads
    from ingest.paths import Home

    torch.set_num_threads(compute_threads())
    run_device = None if device == "auto" else device
    with tempfile.TemporaryDirectory(prefix="m3-rss-") as tmp:
        folder = Path(tmp) / "sample"
        shutil.copytree(sample, folder)
        runtime = Runtime.load(model, device=run_device, cache=Path(cache), decode_weights=decode_weights)
        embedder = Embedder.load(Path(cache) / "embedder", device=run_device)
        home = Home.at(Path(tmp) / "home")
        engine = Engine.open(home, model=model, device=run_device, runtime=runtime, embedder=embedder)
        engine.load()
        idle = _status("VmRSS")
        _reset_peak()
        engine.add_folder(folder)
        engine.scan()
        engine.sync_memories()
        ingest = _status("VmHWM")
        _reset_peak()
        answer = engine.ask(QUESTION)
        "".join(answer)
        answered = _status("VmHWM")
        engine.close()
    return {"idle": idle, "ingest": ingest, "answer": answered}


def _status(field: str) -> float:
    """A /proc/self/status memory field in MiB (VmRSS: now; VmHWM: the peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise BenchmarkError(f"/proc/self/status has no {field} (resident memory is measured on Linux only)")


def _reset_peak() -> None:
    """Start VmHWM again from the current resident size (Linux: writing 5 to clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def spin() -> subprocess.Popen:
    """A child that keeps one core busy until killed (the load of `loaded.*` figures)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    result = {"load": _load, "rss": _rss}[command](*rest)
    print(json.dumps(result))
