"""`m3 bench soak --quick` for real: 10,000 events about 500 files, handed to the engine 8 at a time as
the watcher gathers them (about three minutes here): at every checkpoint the sentinel facts are retrieved
and readable, the doctor finds nothing to repair, catalog, bank and index name the same texts, and
compaction keeps the files within 1.3x the live bytes (SQLite's WAL files, a few MB whatever the data, are
left out at this size)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from assistant.cli import cli
from bench import run_benchmark
from bench.errors import BenchmarkError
from bench.soak_bench import KINDS, MAX_DISK_RATIO, SENTINELS, _ExactSearch, _held, _missed
from bench.soak_run import RunFolder
from engine.retrieval.embedder import Embedder
from engine.retrieval.retriever import Retriever
from tests.test_cli import M3, ctrl_c_on, environment, m3

BATCH = 8
SMALL = {"events": 1_200, "documents": 120, "checkpoint_every": 300, "batch": BATCH}


def test_soak_keeps_one_folder_consistent_through_its_events(tmp_path, home, model_path):
    results, table = run_benchmark("soak", tmp_path, home, model_path, device="cpu", quick=True, batch=BATCH)
    assert json.loads((tmp_path / "soak.json").read_text()) == results
    assert (tmp_path / "soak.md").read_text() == table + "\n"
    assert (tmp_path / "soak.png").read_bytes().startswith(b"\x89PNG")
    checkpoints = results["checkpoints"]
    assert [c["events"] for c in checkpoints] == [2_500, 5_000, 7_500, 10_000] and results["batch"] == BATCH
    assert all(results["counts"][k] > 0 for k in KINDS)
    assert sum(results["counts"].values()) == 10_000 - len(SENTINELS)
    assert len(results["windows"]) == 40 and results["events_s"] > 0
    for c in checkpoints:
        assert c["recall_at_5"] == 1.0 and c["readable"] == 1.0 and c["missed"] == [], c
        assert c["exact_vector_recall_at_5"] == 1.0, c
        assert c["doctor_ok"] and not c["doctor_found"] and c["same_texts"], c
        assert not any(c["work_left"].values()) and c["consistent"]
        assert c["live_files"] == c["documents"] and 0 < c["memories"] <= c["chunks"]
        assert c["disk"]["parts"]["bank"]["live"] > 0 and c["disk_max"]["ratio"] >= c["disk"]["ratio"]
        latency = c["latency"]["all"]
        assert latency["n"] == 2_500 and latency["p95_ms"] >= latency["p50_ms"] > 0
    held = results["held"]
    assert held["sentinels"] and held["consistent"]
    assert held["disk"] and held["disk_max"]["ratio_without_wal"] <= MAX_DISK_RATIO
    assert set(held["latency_growth"]) <= {f"{k} {q}" for k in ("all", *KINDS) for q in ("p50_ms", "p95_ms")}
    assert set(held["latency_grown"]) <= set(held["latency_growth"])
    assert "| 10,000 |" in table and "sentinels retrieved and readable yes" in table


def test_a_stopped_soak_resumes_from_its_last_checkpoint_as_if_never_stopped(tmp_path, home, model_path):
    """A soak killed (SIGKILL) once its first checkpoint is copied, resumed, reaches every checkpoint with
    the files, chunks and memories of the same soak run without a stop; then its folder is gone. Until it
    is resumed, other settings and a new run are refused (hours of events are not thrown away), and so is
    a copy that is not as its checkpoint left it."""
    work = RunFolder(home.data).path
    script = (
        "import sys; from bench import run_benchmark; from ingest.paths import Home;"
        f" run_benchmark('soak', sys.argv[1], Home.at(sys.argv[2]), device='cpu', **{SMALL!r})"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "-c", script, tmp_path / "stopped", home.data.parent]
    stopped = subprocess.Popen(args, env=env)
    deadline = time.monotonic() + 600
    while not (work / "saved" / "state.json").exists() and stopped.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint was saved in 10 minutes"
        time.sleep(0.2)
    time.sleep(1)  # into the next interval: its events are redone
    stopped.kill()
    assert stopped.wait() != 0, "the soak ended before it could be stopped"
    with pytest.raises(BenchmarkError, match="batch=8"):
        run_benchmark("soak", tmp_path / "other", home, model_path, device="cpu", resume=True, batch=4)
    with pytest.raises(BenchmarkError, match=r"A stopped soak \(\d+ of 1,200 events\) is in .*--resume"):
        run_benchmark("soak", tmp_path / "other", home, model_path, device="cpu", **SMALL)
    with pytest.raises(BenchmarkError, match="--quick starts a new soak"):
        run_benchmark("soak", tmp_path / "other", home, model_path, device="cpu", quick=True, resume=True)
    shutil.copytree(work / "saved", tmp_path / "copy")
    shutil.rmtree(work / "saved" / "home" / "data" / "bank")
    with pytest.raises(BenchmarkError, match=r"is not as its last checkpoint left it \(memories 0, not \d"):
        run_benchmark("soak", tmp_path / "other", home, model_path, device="cpu", resume=True)
    shutil.rmtree(work / "saved")
    shutil.copytree(tmp_path / "copy", work / "saved")
    resumed, table = run_benchmark("soak", tmp_path / "resumed", home, model_path, device="cpu", resume=True)
    assert not work.exists()
    straight, _ = run_benchmark("soak", tmp_path / "straight", home, model_path, device="cpu", **SMALL)
    [at] = resumed["resumed_at"]
    assert at % 300 == 0 and 300 <= at < 1_200 and straight["resumed_at"] == []
    assert {k: resumed[k] for k in SMALL} == SMALL and "| 1,200 |" in table

    def folder(results: dict) -> list[tuple]:
        keys = ("events", "live_files", "documents", "chunks", "memories", "counts", "recall_at_5")
        return [tuple(c[k] for k in keys) for c in results["checkpoints"]]

    assert folder(resumed) == folder(straight) and len(folder(straight)) == 4
    assert all(c["consistent"] for c in resumed["checkpoints"])
    assert [w["events"] for w in resumed["windows"]] == [w["events"] for w in straight["windows"]]


def test_ctrl_c_stops_a_soak_in_one_sentence_and_keeps_it_for_resume(tmp_path):
    """SIGINT once the first checkpoint is copied: status 130 and the way on, not click's "Aborted!"; a
    new run is then refused, in one sentence, with the count of events done."""
    args = [str(M3), "bench", "soak", "--events", "1200", "--batch", "8", "--out", str(tmp_path / "out")]
    soak = subprocess.Popen(
        args, env=environment(tmp_path), stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_on
    )
    saved = tmp_path / "data" / "bench" / "soak" / "saved" / "state.json"
    deadline = time.monotonic() + 600
    while not saved.exists() and soak.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint was saved in 10 minutes"
        time.sleep(0.2)
    soak.send_signal(signal.SIGINT)
    _, stderr = soak.communicate(timeout=120)
    assert soak.returncode == 130 and "Aborted" not in stderr and "Traceback" not in stderr
    way_on = "`m3 bench soak --resume` goes on from its last checkpoint, 300 events."
    assert stderr.endswith(f"Stopped. {way_on}\n")
    again = m3("bench", "soak", "--events", "1200", "--out", str(tmp_path / "out"), home=tmp_path)
    assert again.returncode == 1
    assert again.stderr.startswith("Error: A stopped soak (300 of 1,200 events) is in ")


def test_resume_with_quick_is_a_usage_error(tmp_path):
    result = m3("bench", "soak", "--resume", "--quick", "--out", str(tmp_path / "results"), home=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--quick starts a new soak; --resume goes on with the stopped one's settings." in result.stderr
    assert not (tmp_path / "results").exists()


def test_resume_without_a_stopped_soak_says_so(tmp_path):
    result = m3("bench", "soak", "--resume", "--out", str(tmp_path / "results"), home=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr == f"Error: There is no stopped soak to resume in {tmp_path / 'data/bench/soak'}.\n"


def checkpoint(ms: dict[str, float]) -> dict:
    """A checkpoint as `_held` reads it: each kind's p50 (p95 twice that), every check passed."""
    latency = {k: {"n": 1, "p50_ms": ms.get(k, 1.0), "p95_ms": 2 * ms.get(k, 1.0)} for k in ("all", *KINDS)}
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
    for option in ("--events 100", "--batch 100", "--resume"):
        args = ["bench", "engine", *option.split()]
        result = CliRunner().invoke(cli, args, env={"M3_HOME": str(tmp_path)})
        assert result.exit_code == 2
        assert f"{option.split()[0]} applies to the soak benchmark only." in result.output


def test_the_exact_search_ranks_as_a_small_hnsw_index_does(tmp_path, embedder_cache):
    """On a handful of vectors HNSW is exact: the brute-force ranking a missed sentinel is looked up in
    must give the same order, each text first for its own words."""
    embedder = Embedder.load(embedder_cache)
    texts = [fact for fact, _ in SENTINELS[:8]]
    with Retriever(tmp_path / "retrieval", embedder) as retriever:
        retriever.add([(f"h{i}", text) for i, text in enumerate(texts)])
        exact = _ExactSearch(retriever, [f"h{i}" for i in range(len(texts))])
        for i, (_, question) in enumerate(SENTINELS[:8]):
            vector = embedder.embed([question])[0]
            ids = retriever.vector_search(vector, len(texts))
            names = retriever.hashes(ids)
            assert exact.nearest(vector) == [names[j] for j in ids]
            assert exact.nearest(vector, 1) == [f"h{i}"], question


def test_a_missed_sentinel_is_named_with_its_ranks():
    checkpoints = [
        {"events": 400_000, "missed": [{"question": "Q?", "rank": {"fused": 7, "vector": None, "exact": 9}}]},
        {"events": 500_000, "missed": []},
        {"events": 600_000},  # saved before misses were recorded
    ]
    assert _missed(checkpoints) == [
        "",
        "Sentinels missed by the fused top 5, with their ranks:"
        " at 400,000 “Q?” (fused 7, vector >50, exact 9).",
    ]
    assert _missed(checkpoints[1:]) == []
