"""Abstention signals tried offline on a run's qa-answers.jsonl (bench/qa_signals.py)."""

from __future__ import annotations

import json
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given

from bench.qa_eval import MAX_FALSE_ABSTAIN
from bench.qa_signals import SIGNALS, evaluate, group, table

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def _row(split: str, qid: str, mode: str, confidence: float, article: int = 0, **extra) -> dict:
    row = {"setting": f"{mode}/{mode} k=5", "split": split, "id": qid, "article": article, "answer": "Paris"}
    row.update(abstained=False, confidence=confidence, support=0.1, unknown_logprob=-3.0)
    return row | extra


@given(st.lists(st.tuples(st.floats(-10, 0), st.booleans()), min_size=1, max_size=60))
def test_the_threshold_withdraws_at_most_the_allowed_share_of_tuning_answers(tune):
    rows = [_row("tune", str(i), "rag", c, abstained=a) for i, (c, a) in enumerate(tune)]
    result = evaluate(group(rows), "rag", SIGNALS["confidence"])
    own = sum(a for _, a in tune) / len(tune)
    assert result["tune"] <= max(MAX_FALSE_ABSTAIN, own) + 1e-12


def test_a_signal_that_separates_withdraws_every_unanswerable_question():
    """Answerable answers confident (-1), unanswerable ones not (-6): all of Normans' (article 0) and
    Rhine's (article 1) unanswerable questions are withdrawn, no held-out answerable one."""
    rows = [_row("tune", f"t{i}", "memory", -1.0 - i / 100) for i in range(20)]
    rows += [_row("heldout", f"h{i}", "memory", -1.0) for i in range(10)]
    rows += [_row("unanswerable", f"u{i}", "memory", -6.0, article=i % 2) for i in range(10)]
    result = evaluate(group(rows), "memory", SIGNALS["confidence"])
    assert result["normans"] == result["rhine"] == 1.0
    assert result["heldout"] == 0.0 and result["tune"] <= MAX_FALSE_ABSTAIN


def test_a_file_from_before_a_signal_leaves_that_signal_unmeasured():
    rows = [_row("tune", str(i), "rag", -1.0) for i in range(5)]
    for row in rows:
        del row["unknown_logprob"]
    result = evaluate(group(rows), "rag", SIGNALS["confidence - unknown_logprob"])
    assert result["threshold"] is None and result["tune"] == 0.0


def test_agreement_compares_the_two_sourced_answers_to_one_question():
    rows = [
        _row("tune", "q", "rag", -1.0, answer="the river Rhine"),
        _row("tune", "q", "memory", -1.0, answer="Rhine river"),
        _row("tune", "lone", "rag", -1.0),
    ]
    grouped = group(rows)
    agreement = SIGNALS["agreement with the other mode"]
    assert agreement("rag", grouped[("tune", "q")]) == pytest.approx(1.0)  # SQuAD F1: "the" dropped
    assert agreement("rag", grouped[("tune", "lone")]) is None


def test_support_offline_agrees_with_the_runs_own_calibration():
    """The recorded run (bench/results/qa-main-s100*): the offline support threshold and shares are the
    ones the benchmark computed while it ran."""
    run = json.loads((RESULTS / "qa-main-s100.json").read_text())
    answers = RESULTS / "qa-main-s100-answers.jsonl"
    grouped = group(json.loads(line) for line in answers.read_text().splitlines())
    for record in (r for r in run["records"] if r.get("abstention")):
        offline = evaluate(grouped, record["mode"], SIGNALS["support"])
        calibrated = record["abstention"]
        assert offline["threshold"] == pytest.approx(calibrated["threshold"])
        assert offline["tune"] == pytest.approx(calibrated["tune"]["answerable"])
        assert offline["normans"] == pytest.approx(calibrated["tune"]["unanswerable"])
        assert offline["heldout"] == pytest.approx(calibrated["heldout"]["answerable"])
        assert offline["rhine"] == pytest.approx(calibrated["heldout"]["unanswerable"])
    assert table(answers).count("\n") == 1 + 2 * len(SIGNALS)
