"""The `m3` command as a user runs it: a real process, real files, one sentence on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_gguf import write_tiny_gguf

M3 = Path(sys.executable).with_name("m3")


def m3(*args: str, home: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "M3_HOME": str(home)} if home else None
    return subprocess.run([str(M3), *args], capture_output=True, text=True, timeout=600, env=env)


def assert_one_sentence_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_generate_continues_a_prompt(model_path):
    result = m3("--model", str(model_path), "generate", "Monday, Tuesday, Wednesday,", "--max-tokens", "8")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Monday, Tuesday, Wednesday,")
    assert "Thursday, Friday" in result.stdout


def test_missing_model(tmp_path):
    assert_one_sentence_error(m3("--model", str(tmp_path / "nope.gguf"), "generate", "hi"), "not found")


@pytest.mark.parametrize("content", [b"", b"GGUF" + bytes(range(256)) * 8, b"just some text\n" * 100])
def test_corrupt_model(tmp_path, content):
    path = tmp_path / "broken.gguf"
    path.write_bytes(content)
    assert_one_sentence_error(m3("--model", str(path), "generate", "hi"), "not a readable GGUF")


def test_truncated_model(tmp_path):
    path = write_tiny_gguf(tmp_path / "tiny.gguf", "llama")
    path.write_bytes(path.read_bytes()[:-5000])
    assert_one_sentence_error(m3("--model", str(path), "generate", "hi"), str(path))


def test_unsupported_architecture(tmp_path):
    path = write_tiny_gguf(tmp_path / "odd.gguf", "llama", architecture="mamba")
    assert_one_sentence_error(m3("--model", str(path), "generate", "hi"), "mamba", "not supported")


@pytest.mark.parametrize("prompt", ["", "   \n"])
def test_empty_prompt(tmp_path, prompt):
    path = write_tiny_gguf(tmp_path / "tiny.gguf", "llama")
    assert_one_sentence_error(m3("--model", str(path), "generate", prompt), "empty")


def test_unknown_device_is_one_sentence(tmp_path):
    path = write_tiny_gguf(tmp_path / "tiny.gguf", "llama")
    assert_one_sentence_error(m3("--model", str(path), "--device", "quantum", "generate", "hi"), "quantum")


def test_folders_scan_and_status(tmp_path, model_path):
    """A user's session: add a folder, scan it, see a broken file's reason, edit, rescan, remove."""
    home, notes = tmp_path / "home", tmp_path / "notes"
    (notes / "sub").mkdir(parents=True)
    (notes / "a.md").write_text("# Plans\n\nBuy a kite.\n\nFly it on Sunday.\n")
    (notes / "sub" / "b.txt").write_text("The spare key is under the blue pot.\n")
    (notes / "broken.pdf").write_bytes(b"%PDF-1.7\n" + bytes(range(256)))
    (notes / ".git").mkdir()
    (notes / ".git" / "config").write_text("ignored\n")

    def run(*args: str) -> str:
        result = m3("--model", str(model_path), *args, home=home)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "Watching" in run("watch", str(notes))
    assert run("folders").splitlines() == [str(notes.resolve())]
    out = run("ingest")
    assert "3 new" in out and "Documents: 3 (2 parsed, 0 pending, 1 failed)" in out
    assert "broken.pdf" in out and "failed" in out
    (notes / "sub" / "b.txt").write_text("The spare key is under the red pot now.\n")
    (notes / "a.md").rename(notes / "sub" / "plans.md")
    out = run("ingest", str(notes))
    assert "1 changed" in out and "1 moved" in out
    assert "broken.pdf" in run("status")
    other = tmp_path / "other"
    other.mkdir()
    (other / "c.txt").write_text("Another note.\n")
    assert "Watching" in run("ingest", str(other))  # ingesting an unwatched folder watches it first
    assert len(run("folders").splitlines()) == 2
    run("unwatch", str(other))
    assert "No longer watching" in run("unwatch", str(notes))
    assert "Documents: 0" in run("status")
    assert (notes / "sub" / "plans.md").exists()  # forgetting a folder never touches the files


def test_watching_a_missing_folder_is_one_sentence(tmp_path, model_path):
    result = m3("--model", str(model_path), "watch", str(tmp_path / "nowhere"), home=tmp_path / "h")
    assert_one_sentence_error(result, "does not exist")


def test_ask_json_and_doctor_repairs_a_damaged_bank_and_index(tmp_path, model_path):
    """`m3 ask --json` keeps its contract; `m3 doctor` finds a flipped byte in the bank and a damaged
    vector index, rebuilds both, and the next ingest writes the lost memory again from its text."""
    home, notes = tmp_path / "home", tmp_path / "notes"
    notes.mkdir()
    (notes / "boat.md").write_text("# Boat\n\nThe boat is called the Silver Heron.\n")
    (notes / "tea.txt").write_text("Green tea is steeped for two minutes.\n")

    def run(*args: str, ok: bool = True) -> str:
        result = m3("--model", str(model_path), *args, home=home)
        assert (result.returncode == 0) == ok, result.stderr
        assert "Traceback" not in result.stderr
        return result.stdout

    run("ingest", str(notes))
    out = json.loads(run("ask", "What is the boat called?", "--json"))
    assert set(out) == {"answer", "mode", "citations"} and out["mode"] == "memory"
    assert "Heron" in out["answer"]
    first = out["citations"][0]
    assert set(first) == {"n", "path", "page", "line_start", "line_end", "text", "share"}
    assert first["n"] == 1 and first["path"] == str(notes.resolve() / "boat.md") and first["line_start"] == 1

    segment = next((home / "data" / "bank").glob("seg-*.m3s"))
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    (home / "data" / "retrieval" / "hnsw" / "index.bin").write_bytes(b"garbage")
    report = run("doctor")
    assert "bank:" in report and "1 memories lost" in report
    assert "index:" in report
    assert "FAIL" not in report
    run("doctor")  # now clean
    assert "0 waiting for memories" in run("ingest")  # the lost memory was written again
    assert "Heron" in json.loads(run("ask", "What is the boat called?", "--json"))["answer"]
