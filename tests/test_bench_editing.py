"""`m3 bench editing`: generated facts, an editor's save, and the quick run for real (the default model in a
real engine service watching real files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gguf import GGUFWriter

from bench import editing_bench, run_benchmark
from bench.errors import BenchmarkError
from bench.squad import normalize
from engine.chat.prompt import BASE


def test_facts_are_invented_apart_and_spread_over_files():
    facts = editing_bench.make_facts(40, 5)
    values = [normalize(v) for f in facts for v in (f.old, f.new)]
    assert len(set(values)) == len(values)  # no value is another fact's, nor its own other value
    assert [f.mode for f in facts[:4]] == ["memory", "rag", "memory", "rag"]
    assert {f.file for f in facts} == {f"notes-{i:03d}.md" for i in range(8)}
    assert facts == editing_bench.make_facts(40, 5)  # seeded
    with pytest.raises(ValueError, match="no other file"):
        editing_bench.make_facts(3, 3)


def test_an_edit_is_saved_as_an_editor_saves(tmp_path: Path):
    facts = editing_bench.make_facts(12, 4)
    values = editing_bench.write_folder(tmp_path, facts)
    fact = facts[0]
    path = tmp_path / fact.file
    before, inode = path.read_text(), path.stat().st_ino
    assert before.splitlines()[fact.line - 1] == fact.text(fact.old)

    editing_bench.save_edit(tmp_path, fact, facts, values)

    after = path.read_text()
    assert path.stat().st_ino != inode  # a new file renamed over the old one, not written in place
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({f.file for f in facts})  # no temp left
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert changed == [(fact.text(fact.old), fact.text(fact.new))]
    assert values[fact.id] == fact.new


def test_the_ceiling_takes_a_base_model_prompt_and_refuses_chat_turns(model_path: Path, tmp_path: Path):
    assert editing_bench.text_prompt(model_path) == BASE
    chat = tmp_path / "chat.gguf"  # metadata only: the format is read from it, no tensor
    writer = GGUFWriter(chat, "gemma3")
    writer.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(BenchmarkError, match="chat.gguf's chat turns"):
        editing_bench.text_prompt(chat)


def test_quick_run_edits_facts_through_the_service(home, model_path: Path, tmp_path: Path):
    results, table = run_benchmark("editing", tmp_path, home, model_path, "cpu", quick=True)

    assert json.loads((tmp_path / "editing.json").read_text()) == json.loads(json.dumps(results))
    assert (tmp_path / "editing.md").read_text() == table + "\n"
    records = [json.loads(line) for line in (tmp_path / "editing-facts.jsonl").read_text().splitlines()]
    assert results["facts"] == len(records) == editing_bench.QUICK_FACTS
    assert {m: s["n"] for m, s in results["modes"].items()} == {"memory": 2, "rag": 2}
    for s in results["modes"].values():
        for key in ("success", "generalisation", "locality", "ceiling", "effect_p50_s", "effect_p95_s"):
            assert key in s
    assert results["modes"]["rag"]["reread"] == 0.0  # only memory answers are read again as text
    assert set(results["met"]["memory"]) == {"effect_p95_s", "locality", "success_gap"}
    for r in records:
        assert r["unrelated_file"] != r["file"]  # locality asks from another file
        assert r["outcome"] in ("effect", "wrong", "timeout")
        assert 0 < r["noticed_s"] < r["caught_up_s"]  # the watcher saw every save, the service caught up
        if r["after_withdrawn"] is None:  # the answer given is the memory's own
            assert r["memory_alone"] == r["success"]
        else:
            assert r["mode"] == "memory" and r["after_withdrawn"]["names"]
    took = [r for r in records if r["outcome"] == "effect"]
    assert took, records  # the default model answers some edited facts from their new text
    for r in took:
        assert r["noticed_s"] < r["effect_s"] < editing_bench.TIMEOUT_S
        assert r["effect_answer_s"] < r["effect_s"]
    assert "| memory | 2 |" in table and "| rag | 2 |" in table
