"""`m3 bank export / inspect / import / remove` as a user runs them: real processes, a real service (the
tiny random model: the answers' content does not matter here), real files, one sentence on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from service_rig import corpus
from test_cli import assert_one_sentence_error, m3, no_service_outlives_its_test, ok  # noqa: F401

from bench.tiny_gguf import write_tiny_gguf


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf", "gemma3")


def status(home: Path, tiny: Path) -> str:
    return ok(m3("--model", str(tiny), "status", home=home))


def test_export_inspect_import_remove(tmp_path, tiny):
    source, target = tmp_path / "source", tmp_path / "target"
    notes = corpus(tmp_path / "notes", files=3)
    model = ("--model", str(tiny))
    ok(m3(*model, "ingest", str(notes), home=source))
    bank = tmp_path / "notes.m3bank"

    out = ok(m3(*model, "bank", "export", str(bank), home=source))
    assert f"Wrote {bank}" in out and "3 documents" in out and "Left out" not in out
    assert_one_sentence_error(m3(*model, "bank", "export", str(bank), home=source), "exists", "--force")
    ok(m3(*model, "bank", "export", str(bank), "--force", "--folder", str(notes), home=source))
    (tmp_path / "link.m3bank").symlink_to(tmp_path / "nowhere.m3bank")  # dangling: still not replaced
    assert_one_sentence_error(
        m3(*model, "bank", "export", str(tmp_path / "link.m3bank"), home=source), "exists"
    )
    assert_one_sentence_error(
        m3(*model, "bank", "export", str(tmp_path / "x.m3bank"), "--folder", str(tmp_path), home=source),
        "is not a watched folder",
    )

    shown = ok(m3(*model, "bank", "inspect", str(bank), home=target))
    assert "Compatible: its memories and vectors are used as they are." in shown
    assert "Documents: 3 new, 0 replaced, 0 unchanged." in shown
    report = json.loads(ok(m3(*model, "bank", "inspect", "--json", str(bank), home=target)))
    assert report["manifest"]["counts"]["documents"] == 3 and report["plan"]["new_collections"] == ["notes"]

    before = status(target, tiny)
    ok(m3(*model, "bank", "import", "--dry-run", str(bank), home=target))
    assert status(target, tiny) == before  # a dry run changes nothing

    imported = ok(m3(*model, "bank", "import", str(bank), home=target))
    assert "\nImported\nCollections: notes (new: notes)." in imported
    assert "Documents: 3" in status(target, tiny)
    again = ok(m3(*model, "bank", "import", str(bank), home=target))
    assert "Documents: 0 new, 0 replaced, 3 unchanged." in again
    answer = json.loads(ok(m3(*model, "ask", "--json", "Which hook holds the key of door 1?", home=target)))
    assert all(c["path"].startswith("notes/note-") for c in answer["citations"])

    ok(m3(*model, "bank", "remove", "notes", home=target))
    assert "Documents: 0" in status(target, tiny)
    assert_one_sentence_error(m3(*model, "bank", "remove", "notes", home=target), "no imported collection")


@pytest.mark.parametrize("content", [b"", b"M3BANK\r\n" + bytes(200), b"not a bank at all" * 10])
def test_a_bad_file_is_one_sentence_and_exit_1(tmp_path, tiny, content):
    bad = tmp_path / "bad.m3bank"
    bad.write_bytes(content)
    for command in ("inspect", "import"):
        result = m3("--model", str(tiny), "bank", command, str(bad), home=tmp_path / "home")
        assert result.returncode == 1
        assert_one_sentence_error(result)
    missing = m3(
        "--model", str(tiny), "bank", "import", str(tmp_path / "nope.m3bank"), home=tmp_path / "home"
    )
    assert_one_sentence_error(missing, "cannot be read")
