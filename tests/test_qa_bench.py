"""`m3 bench qa` on a tiny in-repo excerpt of XQuAD and SQuAD v2: the whole pipeline, every output file,
the JSON contract, and the choice of the default profile."""

from __future__ import annotations

import json
import os
import re
import statistics
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from bench import run_benchmark
from bench.qa_bench import _shape, choose_default, f1_ratio, sweep_settings
from bench.qa_eval import Outcome, calibrate, withdrawn_share
from bench.squad import Question
from engine.config import EngineConfig
from engine.errors import ReaderFileError, UnknownProfileError
from engine.memory.profiles import PROFILES

FIXTURE = Path(__file__).parent / "data" / "qa"
# The main table's memory profiles this test asks (the bench asks six beside the default): each setting is
# 11 questions read about five times over, the costliest part of the whole suite; the sizes of every
# profile are tested directly in tests/test_memory.py
ASKED_PROFILES = ("dense", "dense-int4")
KEYS = {
    "f1",
    "em",
    "f1_heldout",
    "em_heldout",
    "gold_logprob",
    "gold_logprob_tune",
    "gold_logprob_heldout",
    "reader",
    "recall_at_5",
    "ttft_s",
    "decode_tok_s",
    "bytes_per_memory",
    "bank_bytes",
}


@pytest.fixture(scope="module")
def quick(tmp_path_factory, home, model_path, monkeypatch_module) -> tuple[dict, Path]:
    monkeypatch_module.setenv("M3_QA_DATA", str(FIXTURE))
    monkeypatch_module.setattr("bench.qa_bench.MAIN_PROFILES", ASKED_PROFILES)
    out = tmp_path_factory.mktemp("results")
    results, _ = run_benchmark("qa", out, home, model_path, quick=True)
    return results, out


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_every_mode_and_profile_has_a_record_with_the_contract_keys(quick):
    results, out = quick
    records = results["records"]
    profiles = dict.fromkeys((EngineConfig().profile, *ASKED_PROFILES))  # the default first
    assert [(r["mode"], r["profile"]) for r in records] == [
        ("none", None),
        ("rag", None),
        *(("memory", p) for p in profiles),
    ]
    assert all(r["table"] == "main" for r in records)
    for r in records:
        assert r.keys() >= KEYS
        assert 0 <= r["f1"] <= 1 and 0 <= r["em_heldout"] <= r["f1_heldout"] <= 1
        assert r["ttft_s"] > 0 and r["decode_tok_s"] > 0
        assert 0 <= r["abstain_unanswerable"] <= 1
    assert json.loads((out / "qa.json").read_text())["records"] == records
    table = (out / "qa.md").read_text()
    assert all(f"| memory | {p} |" in table for p in profiles)
    for png in ("qa-quality.png", "qa-speed.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_main_answer_is_kept_with_its_signals(quick):
    """qa-answers.jsonl: one line per main-table answer, agreeing with the records' means; support and
    confidence and the log-probability of `unknown` measured in rag and memory modes (log-probabilities:
    <= 0), never in none."""
    results, out = quick
    rows = [json.loads(line) for line in (out / "qa-answers.jsonl").read_text().splitlines()]
    asked = results["questions"]
    for record in results["records"]:
        label = f"{record['mode']}/{record['profile'] or record['mode']} "  # Setting.label's start
        mine = [r for r in rows if r["setting"].startswith(label)]
        by_split = {split: [r for r in mine if r["split"] == split] for split in asked}
        assert {split: len(rs) for split, rs in by_split.items()} == asked
        assert statistics.fmean(r["f1"] for r in by_split["tune"]) == pytest.approx(record["f1"])
        assert statistics.fmean(r["f1"] for r in by_split["heldout"]) == pytest.approx(record["f1_heldout"])
        assert all(r["gold_logprob"] is None for r in by_split["unanswerable"])
        measured = record["mode"] != "none"
        assert all((r["support"] is not None) == measured for r in mine)
        for signal in ("confidence", "unknown_logprob"):
            assert all(r[signal] is None if not measured else r[signal] <= 0 for r in mine)
        if measured:  # the abstention reply is scored, not the answer again
            assert any(r["unknown_logprob"] != r["confidence"] for r in mine)


def test_main_asks_none_rag_and_the_default_memory_with_the_ratio_interval(
    tmp_path, home, model_path, monkeypatch
):
    """`--main --profile dense-int4-parallel`: three settings only (that profile as the memory one), no
    speed part or figure, and the held-out memory/RAG F1 ratio with its bootstrap interval over every
    held-out question asked."""
    monkeypatch.setenv("M3_QA_DATA", str(FIXTURE))
    profile = "dense-int4-parallel"
    results, table = run_benchmark("qa", tmp_path, home, model_path, quick=True, main=True, profile=profile)
    records = results["records"]
    assert [(r["mode"], r["profile"]) for r in records] == [
        ("none", None),
        ("rag", None),
        ("memory", profile),
    ]
    assert results["speed"] == [] and not (tmp_path / "qa-speed.png").exists()
    assert (tmp_path / "qa-quality.png").exists() and results["plan"]["name"] == "main quick"
    ratio = results["f1_ratio_heldout"]
    assert ratio["n_heldout"] == results["questions"]["heldout"] > 0
    assert ratio["memory_profile"] == profile and ratio["reader"] == "distilled"
    by_mode = {r["mode"]: r for r in records}
    assert ratio["ratio"] == pytest.approx(by_mode["memory"]["f1_heldout"] / by_mode["rag"]["f1_heldout"])
    assert ratio["ci95"][0] <= ratio["ratio"] <= ratio["ci95"][1]
    assert "over RAG" in table and json.loads((tmp_path / "qa.json").read_text()) == results
    assert by_mode["none"]["abstention"] is None
    for mode in ("rag", "memory"):
        calibrated = by_mode[mode]["abstention"]
        assert calibrated["signal"] == "support" and isinstance(calibrated["threshold"], float)
        assert calibrated["tune"]["answerable"] <= calibrated["max_false"]
        assert 0 <= calibrated["tune"]["unanswerable"] <= 1  # the fixture's SQuAD v2 has one article: Normans
        assert calibrated["heldout"]["unanswerable"] is None and 0 <= calibrated["heldout"]["answerable"] <= 1


def test_a_profile_or_reader_that_does_not_exist_stops_the_run_in_one_sentence(
    tmp_path, home, model_path, monkeypatch
):
    """Before anything loads: an unknown profile, and a missing reader file, named from the working folder
    (not the benchmark's temporary config.toml); one that is there but does not fit the model: a reader
    test's (tests/test_memory_reader.py)."""
    monkeypatch.setenv("M3_QA_DATA", str(FIXTURE))
    with pytest.raises(UnknownProfileError, match=r"^There is no memory profile 'sparse'; choose one of "):
        run_benchmark("qa", tmp_path, home, model_path, quick=True, main=True, profile="sparse")
    monkeypatch.chdir(tmp_path)
    missing = re.escape(str(tmp_path / "readers" / "r.safetensors"))
    with pytest.raises(ReaderFileError, match=rf"^The memory reader {missing} does not exist\.$"):
        run_benchmark("qa", tmp_path, home, model_path, quick=True, main=True, reader="readers/r.safetensors")
    latin1 = tmp_path / os.fsdecode(b"r\xe9sum\xe9.safetensors")  # a name in Latin-1 bytes
    latin1.write_bytes(b"not read: the name is refused first")
    with pytest.raises(ReaderFileError, match=r"^The memory reader .* is not valid UTF-8, .*; rename it\.$"):
        run_benchmark("qa", tmp_path, home, model_path, quick=True, main=True, reader=str(latin1))
    assert not (tmp_path / "qa.json").exists()


F1 = st.one_of(st.just(0.0), st.floats(0.01, 1))  # an F1 is 0 or a share of a short answer's tokens


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(F1, F1), min_size=1, max_size=60), st.integers(0, 99))
def test_the_f1_ratio_interval_holds_its_estimate(pairs, seed):
    memory, rag = [m for m, _ in pairs], [r for _, r in pairs]
    out = f1_ratio(memory, rag, seed, resamples=500)
    assert out["n_heldout"] == len(pairs)
    if sum(rag) == 0:
        assert out["ratio"] is None and out["ci95"] is None
        return
    assert out["ratio"] == pytest.approx(sum(memory) / sum(rag))
    lo, hi = out["ci95"]
    assert lo - 1e-9 <= out["ratio"] <= (float("inf") if hi is None else hi + 1e-9)
    same = f1_ratio(rag, rag, seed, resamples=500)  # a mode against itself: exactly 1, no spread
    assert same["ratio"] == 1 and same["ci95"] == [1, 1]


def test_the_f1_ratio_interval_narrows_with_more_questions():
    memory, rag = [0.0, 1.0, 0.5, 1.0, 0.0], [1.0, 1.0, 0.0, 1.0, 0.5]
    few = f1_ratio(memory, rag, seed=0)["ci95"]
    many = f1_ratio(memory * 20, rag * 20, seed=0)["ci95"]
    assert few[1] - few[0] > 2 * (many[1] - many[0])
    with pytest.raises(ValueError, match="paired"):
        f1_ratio(memory, rag[:-1], seed=0)


def outcome(support: float | None, abstained: bool = False) -> Outcome:
    q = Question("q", "Why?", ("because",), 0, 0)
    return Outcome(q, "", 0.0, 0.0, abstained, None, None, None, None, support)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-5, 5) | st.none(), st.booleans()), min_size=1, max_size=40),
    st.sampled_from([0.0, 0.1, 0.25, 0.5]),
)
def test_calibration_withdraws_the_most_it_may_and_no_more(answers, max_false):
    """Below the threshold an answer is withdrawn: at most `max_false` of the answerable ones are (their own
    abstentions included), and the next measured support up as threshold would withdraw more than that."""
    outcomes = [outcome(s, a) for s, a in answers]
    threshold = calibrate(outcomes, max_false)
    allowed = int(max_false * len(outcomes))
    measured = sorted({o.support for o in outcomes if o.support is not None and not o.abstained})
    if threshold is None:
        assert not measured or sum(o.abstained for o in outcomes) > allowed
        return
    withdrawn = sum(o.withdrawn(threshold) for o in outcomes)
    assert withdrawn <= allowed
    assert withdrawn_share(outcomes, threshold) == pytest.approx(withdrawn / len(outcomes))
    higher = [s for s in measured if s > threshold]
    if higher:
        assert sum(o.withdrawn(higher[0]) for o in outcomes) > allowed


def test_an_answer_without_a_measured_support_is_withdrawn_only_when_it_says_so():
    assert not outcome(None).withdrawn(3.0) and outcome(None, abstained=True).withdrawn(None)
    assert (
        outcome(-1.0).withdrawn(0.0) and not outcome(1.0).withdrawn(0.0) and not outcome(-1.0).withdrawn(None)
    )


def test_sources_are_found_and_make_the_gold_answer_likelier(quick):
    """Four passages: the gold passage is always among five retrieved chunks, and reading it (as text or
    as dense memories) raises the gold answer's log-probability over reading nothing."""
    by = {(r["mode"], r["profile"]): r for r in quick[0]["records"]}
    assert by[("rag", None)]["recall_at_5"] == 1.0
    none = by[("none", None)]["gold_logprob"]
    assert by[("rag", None)]["gold_logprob"] > none + 1
    assert by[("memory", "dense")]["gold_logprob"] > none + 1


def test_memory_sizes_follow_the_profiles(quick):
    size = {r["profile"]: r["bytes_per_memory"] for r in quick[0]["records"] if r["mode"] == "memory"}
    assert 0 < size["dense-int4"] < size["dense"]
    assert all(r["bank_bytes"] >= size[r["profile"]] for r in quick[0]["records"] if r["mode"] == "memory")


def test_speed_compares_modes_and_engines_for_1_5_and_10_chunks(quick):
    rows = quick[0]["speed"]
    assert {(r["retrieved"], r["mode"], r["engine"]) for r in rows} == {
        (k, m, e) for k in (1, 5, 10) for m, e in (("memory", "ours"), ("rag", "ours"), ("rag", "llama.cpp"))
    }
    assert all(r["ttft_s"] > 0 and r["decode_tok_s"] > 0 for r in rows)


def _memory(profile: str, f1: float, size: int, k: int = 5, interval: int = 64) -> dict:
    return {
        "mode": "memory",
        "profile": profile,
        "retrieved": k,
        "interval": interval,
        "f1_heldout": f1,
        "bytes_per_memory": size,
    }


def test_default_is_the_smallest_memory_within_two_percent_of_the_best():
    records = [
        {"mode": "rag", "profile": None, "retrieved": 5, "interval": None, "f1_heldout": 0.9},
        _memory("big", 0.50, 1000),
        _memory("mid", 0.491, 500),  # within 2% of 0.50
        _memory("small", 0.489, 100),  # just outside
        _memory("more-memories", 0.60, 10, k=8),  # another knob, not a profile
    ]
    chosen = choose_default(records)
    assert (chosen["profile"], chosen["best_profile"]) == ("mid", "big")


@pytest.mark.parametrize("default", ["dense", "dense-parallel", "dense-int4"])
def test_each_sweep_name_stands_for_one_memory_shape(default):
    """Banks are kept by profile name: two shapes under one name would read each other's memories."""
    shapes: dict[str, set] = {}
    for s in sweep_settings(PROFILES[default], n_layer=18):
        shapes.setdefault(s.profile.name, set()).add(_shape(s.profile))
        if s.profile.name in PROFILES:
            assert _shape(PROFILES[s.profile.name]) == _shape(s.profile)
    assert all(len(v) == 1 for v in shapes.values())
    assert {s.knob for s in sweep_settings(PROFILES[default], 18)} == {
        "layers",
        "tokens",
        "bits",
        "positions",
        "combined",
        "memories",
        "interval",
        "reader",
    }
