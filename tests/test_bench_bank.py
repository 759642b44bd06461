"""`m3 bench bank` on a small bank: the JSON holds every step's figures, and what was imported is exactly
what was exported (same memories, same bytes, same chunks, every vector); importing again changes nothing."""

from __future__ import annotations

import json

from bench import run_benchmark


def test_bank_benchmark_round_trips_a_small_bank(tmp_path, home, model_path):
    results, table = run_benchmark(
        "bank", tmp_path, home, model_path, device="cpu", chunks=50, default_chunks=5
    )
    assert json.loads((tmp_path / "bank.json").read_text()) == results
    assert (tmp_path / "bank.md").read_text() == table + "\n"
    assert set(results["runs"]) == {"tiny", "default"}
    for run in results["runs"].values():
        assert run["chunks"] >= run["memories"] > 0 and run["memories"] == run["vectors"]
        assert run["bytes_per_memory"] > 0
        export, inspect, first, again = (run[k] for k in ("export", "inspect", "import", "reimport"))
        assert export["bytes"] > run["memories"] * run["bytes_per_memory"]
        for step in (export, inspect, first, again):
            assert step["s"] > 0 and step["peak_rss_mib"] > 0
            assert abs(sum(step["stages_s"].values()) - step["s"]) < 1e-6
        assert export["mb_s"] > 0 and export["memories_s"] > 0 and first["memories_s"] > 0
        assert inspect["compatible"] and inspect["memories_import"] == run["memories"]
        assert first["memories_imported"] == run["memories"] and not first["pending"]
        assert again["memories_imported"] == 0 and again["documents_unchanged"] == run["documents"]
        checks = run["checks"]
        assert checks["source_memories"] == checks["target_memories"] == run["memories"]
        assert checks["same_memories"] and checks["same_chunks"] and checks["same_payloads"]
        assert checks["target_vectors"] == run["vectors"]
    assert results["runs"]["default"]["bytes_per_memory"] > results["runs"]["tiny"]["bytes_per_memory"]
    assert "export MB/s" in table and "import memories/s" in table
