"""`m3 bench qa` on a tiny in-repo excerpt of XQuAD and SQuAD v2: the whole pipeline, every output file,
the JSON contract, and the choice of the default profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import run_benchmark
from bench.qa_bench import MAIN_PROFILES, _shape, choose_default, sweep_settings
from engine.config import EngineConfig
from engine.memory.profiles import PROFILES

FIXTURE = Path(__file__).parent / "data" / "qa"
KEYS = {
    "f1",
    "em",
    "f1_heldout",
    "em_heldout",
    "gold_logprob",
    "recall_at_5",
    "ttft_s",
    "decode_tok_s",
    "bytes_per_memory",
    "bank_bytes",
}


@pytest.fixture(scope="module")
def quick(tmp_path_factory, home, model_path, monkeypatch_module) -> tuple[dict, Path]:
    monkeypatch_module.setenv("M3_QA_DATA", str(FIXTURE))
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
    profiles = dict.fromkeys((EngineConfig().profile, *MAIN_PROFILES))  # the default first
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
    assert size["dense-int4"] < size["dense"]
    assert size["top50"] < size["top75"] < size["dense"]
    assert size["paper"] < size["first-half"] < size["dense"]


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
    }
