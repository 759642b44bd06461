"""`m3 bench soak` for real on a small folder (1,200 events about 100 files, where `--quick` runs 10,000
about 500: ten minutes here): at every checkpoint the sentinel facts are retrieved and readable, the doctor
finds nothing to repair, catalog, bank and index name the same texts, and compaction keeps the files
within 1.3x the live bytes (SQLite's WAL files, a few MB whatever the data, are left out at this size)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from assistant.cli import cli
from bench import run_benchmark
from bench.soak_bench import KINDS, MAX_DISK_RATIO, SENTINELS, _held

EVENTS, DOCUMENTS = 1_200, 100


def test_soak_keeps_one_folder_consistent_through_its_events(tmp_path, home, model_path):
    results, table = run_benchmark(
        "soak", tmp_path, home, model_path, device="cpu", quick=True, events=EVENTS, documents=DOCUMENTS
    )
    assert json.loads((tmp_path / "soak.json").read_text()) == results
    assert (tmp_path / "soak.md").read_text() == table + "\n"
    assert (tmp_path / "soak.png").read_bytes().startswith(b"\x89PNG")
    checkpoints = results["checkpoints"]
    assert [c["events"] for c in checkpoints] == [300, 600, 900, 1200]
    assert all(results["counts"][k] > 0 for k in KINDS)
    assert sum(results["counts"].values()) == EVENTS - len(SENTINELS)
    assert len(results["windows"]) == 40 and results["events_s"] > 0
    for c in checkpoints:
        assert c["recall_at_5"] == 1.0 and c["readable"] == 1.0, c
        assert c["doctor_ok"] and not c["doctor_found"] and c["same_texts"], c
        assert not any(c["work_left"].values()) and c["consistent"]
        assert c["live_files"] == c["documents"] and 0 < c["memories"] <= c["chunks"]
        assert c["disk"]["parts"]["bank"]["live"] > 0 and c["disk_max"]["ratio"] >= c["disk"]["ratio"]
        latency = c["latency"]
        assert latency["edit"]["n"] > 0 and latency["all"]["p95_ms"] >= latency["all"]["p50_ms"]
    held = results["held"]
    assert held["sentinels"] and held["consistent"]
    assert held["disk_max"]["ratio_without_wal"] <= MAX_DISK_RATIO
    assert set(held["latency_growth"]) <= {f"{k} {q}" for k in KINDS for q in ("p50_ms", "p95_ms")}
    assert set(held["latency_grown"]) <= set(held["latency_growth"])
    assert "| 1,200 |" in table and "sentinels retrieved and readable yes" in table


def checkpoint(ms: dict[str, float]) -> dict:
    """A checkpoint as `_held` reads it: each kind's p50 (p95 twice that), every check passed."""
    latency = {k: {"n": 1, "p50_ms": ms.get(k, 1.0), "p95_ms": 2 * ms.get(k, 1.0)} for k in KINDS}
    disk = {"ratio": 1.0, "ratio_without_wal": 1.0, "bank_ratio": 1.0}
    checks = {"recall_at_5": 1.0, "readable": 1.0, "consistent": True}
    return {**checks, "latency": latency, "disk": disk, "disk_max": disk}


def test_latency_grows_only_past_both_the_ratio_and_the_slack():
    """A 2 ms move taking 5 ms, or a 100 ms edit taking 140 ms, is no growth; 20 ms taking 40 is."""
    first = checkpoint({"move": 2.0, "edit": 100.0, "add": 20.0})
    held = _held([first, checkpoint({"move": 5.0, "edit": 140.0, "add": 20.0})])
    assert held["latency"] and held["latency_grown"] == [] and held["latency_growth"]["move p50_ms"] == 2.5
    held = _held([first, checkpoint({"move": 2.0, "edit": 100.0, "add": 40.0})])
    assert not held["latency"] and held["latency_grown"] == ["add p50_ms", "add p95_ms"]


def test_events_are_refused_for_other_benchmarks(tmp_path):
    """Before any model loads: one usage sentence, exit status 2."""
    result = CliRunner().invoke(cli, ["bench", "engine", "--events", "100"], env={"M3_HOME": str(tmp_path)})
    assert result.exit_code == 2
    assert "--events applies to the soak benchmark only." in result.output
