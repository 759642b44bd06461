"""The fresh-process measurements of `m3 bench engine` (load time, resident memory), on the tiny model."""

from __future__ import annotations

from pathlib import Path

from bench import ask_wall, engine_process
from bench.tiny_gguf import write_tiny_gguf


def test_the_load_child_times_an_empty_and_a_filled_weight_cache(tmp_path: Path):
    model = write_tiny_gguf(tmp_path / "tiny.gguf", "gemma3")
    cache = tmp_path / "cache"
    first = engine_process.child("load", str(model), "cpu", str(cache), "int4")["load_s"]
    assert first > 0 and len(list((cache / "weights").glob("*.safetensors"))) == 1  # it built the entry
    assert engine_process.child("load", str(model), "cpu", str(cache), "int4")["load_s"] > 0


def test_the_rss_child_reports_idle_ingest_and_answer(tmp_path: Path, home):
    model = write_tiny_gguf(tmp_path / "tiny.gguf", "gemma3")
    rss = engine_process.child("rss", str(model), "cpu", str(home.cache), "int8", str(ask_wall.SAMPLE))
    assert set(rss) == {"idle", "ingest", "answer"}
    assert 0 < rss["idle"] <= rss["ingest"] and rss["answer"] > 0  # MiB; ingest holds more than idle
