"""Bank files end to end through the engine: export, import into an empty home with the source files gone
(same answers, same top citations), importing twice, partial scopes, a bank from another model (its
memories written again here), hostile files refused with the home unchanged, and kill -9 at many points
of an import and an export."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
import torch
from bank_transfer import snapshot
from service_rig import corpus

from bench.tiny_gguf import write_tiny_gguf
from engine import Engine
from engine.bankfile.layout import BankFileCancelled, BankFileError
from engine.bankfile.reader import BankReader
from engine.bankfile.writer import BankWriter
from engine.memory.codec import decode, encode
from engine.memory.quantization import dequantize, quantize
from engine.retrieval.embedder import Embedder
from ingest.errors import NotFoundError

CHILD = Path(__file__).with_name("bank_transfer.py")
VAULT = (
    "# Security notes\n\nThe kitchen door sticks in winter.\n\n"
    "The access code for the blue vault is 7391-QX.\n"
)
GARDEN = "# Garden\n\nThe roses by the gate were planted by Miriam Okafor in March 2019.\n"
QUESTIONS = ("What is the access code for the blue vault?", "Who planted the roses by the gate?")


@pytest.fixture(scope="module")
def embedder(embedder_cache: Path) -> Embedder:
    return Embedder.load(embedder_cache)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf", "gemma3")


def engine_at(root: Path, embedder: Embedder, runtime=None, model: Path | None = None) -> Engine:
    return Engine.open(root, runtime=runtime, model=model, embedder=embedder)


def files_of(folder: Path) -> dict[str, str]:
    """Every file under `folder` with the SHA-256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def source(rt, embedder, tmp_path_factory):
    """A home watching two folders (notes/ and garden/), memories written, its bank exported whole."""
    root = tmp_path_factory.mktemp("source")
    (root / "docs" / "notes").mkdir(parents=True)
    (root / "docs" / "garden").mkdir()
    (root / "docs" / "notes" / "vault.md").write_text(VAULT)
    (root / "docs" / "garden" / "roses.md").write_text(GARDEN)
    engine = engine_at(root / "home", embedder, rt)
    for name in ("notes", "garden"):
        engine.add_folder(root / "docs" / name)
    engine.scan()
    assert engine.sync_memories() == 2
    exported = engine.export_bank(root / "all.m3bank")
    assert (exported.documents, exported.chunks, exported.memories, exported.vectors) == (2, 2, 2, 2)
    answers = {q: engine.ask(q, "memory") for q in QUESTIONS}
    for a in answers.values():
        "".join(a)
    yield engine, root, answers
    engine.close()


def test_round_trip_into_an_empty_home_answers_the_same_without_the_files(source, rt, embedder, tmp_path):
    engine, root, answers = source
    bank = tmp_path / "moved.m3bank"
    shutil.copy(root / "all.m3bank", bank)
    target = engine_at(tmp_path / "home", embedder, rt)
    report = target.import_bank(bank)
    assert report.verdict.compatible and not report.pending
    assert (report.plan.documents_new, report.plan.memories_import, report.plan.vectors_import) == (2, 2, 2)
    assert target.catalog.counts()["memories_to_write"] == 0
    assert not any((target.home.data / "imports").iterdir())  # the staged copy is gone once applied
    for question, before in answers.items():
        after = target.ask(question, "memory")
        "".join(after)
        assert after.text == before.text
        top, was = after.citations[0], before.citations[0]
        label = Path(was.path).parent.name
        assert top.path == f"{label}/{Path(was.path).name}"  # the label and the path, no absolute path
        assert (top.line_start, top.line_end, top.text) == (was.line_start, was.line_end, was.text)
    assert [str(f.path) for f in target.catalog.folders("imported")] == ["garden", "notes"]
    assert target.folders() == []  # collections are not watched: no scan touches them
    target.close()


def test_importing_twice_changes_nothing(source, rt, embedder, tmp_path):
    _, root, _ = source
    target = engine_at(tmp_path / "home", embedder, rt)
    target.import_bank(root / "all.m3bank")
    once = snapshot(target)
    again = target.import_bank(root / "all.m3bank")
    assert again.plan.documents_unchanged == 2 and not again.plan.changes
    assert (again.plan.memories_import, again.plan.vectors_import) == (0, 0)
    assert snapshot(target) == once
    target.close()


def test_partial_scopes(source, tmp_path):
    engine, root, _ = source
    one = engine.export_bank(tmp_path / "notes.m3bank", folder=str(root / "docs" / "notes"))
    assert (one.documents, one.chunks, one.memories) == (1, 1, 1)
    glob = engine.export_bank(tmp_path / "garden.m3bank", documents="garden/*.md", vectors=False)
    assert (glob.documents, glob.vectors) == (1, 0)
    reader_docs = engine.inspect_bank(tmp_path / "garden.m3bank").plan.collections
    assert reader_docs == ["garden"]
    with pytest.raises(BankFileError, match="is not a watched folder"):
        engine.export_bank(tmp_path / "x.m3bank", folder=str(tmp_path))
    with pytest.raises(BankFileError, match="no documents to export in that scope"):
        engine.export_bank(tmp_path / "x.m3bank", documents="*.pdf")
    assert not (tmp_path / "x.m3bank").exists()


def test_a_bank_from_another_model_is_written_again_here(source, rt, embedder, tiny, tmp_path):
    """Exported by an engine running the tiny random model: its memories cannot be read by the default
    model, so the texts and vectors are kept and the memories are written here from the text."""
    _, root, _ = source
    other = engine_at(tmp_path / "other", embedder, model=tiny)
    other.add_folder(root / "docs" / "notes")
    other.scan()
    other.sync_memories()
    other.export_bank(tmp_path / "tiny.m3bank")
    other.close()
    target = engine_at(tmp_path / "home", embedder, rt)
    report = target.inspect_bank(tmp_path / "tiny.m3bank")
    assert report.verdict.memories == "write" and report.verdict.vectors == "import"
    assert "another model" in report.verdict.reasons[0]
    chunks = report.plan.chunks  # cut by the tiny model's tokenizer, which spells text byte by byte
    assert (report.plan.memories_import, report.plan.memories_write) == (0, chunks)
    target.import_bank(tmp_path / "tiny.m3bank")
    # nothing is indexed before its memory is written, so nothing is left behind if it is removed first
    assert target.bank.keys() == [] and len(target.retriever) == 0
    assert target.catalog.counts()["memories_to_write"] == chunks  # in the background, with progress
    assert target.sync_memories() == chunks
    assert len(target.bank.keys()) == len(target.retriever) == chunks
    answer = target.ask(QUESTIONS[0], "memory")
    "".join(answer)
    assert "7391" in answer.text
    assert answer.citations[0].path == "notes/vault.md"
    target.close()


@pytest.mark.parametrize("damage", ["truncated", "flipped", "wrong file"])
def test_a_hostile_file_is_refused_and_the_home_is_unchanged(source, rt, embedder, tmp_path, damage):
    _, root, _ = source
    target = engine_at(tmp_path / "home", embedder, rt)
    target.import_bank(root / "all.m3bank")
    before, on_disk = snapshot(target), files_of(target.home.data / "bank")
    raw = bytearray((root / "all.m3bank").read_bytes())
    bad = tmp_path / "bad.m3bank"
    if damage == "truncated":
        bad.write_bytes(raw[: len(raw) // 2])
    elif damage == "flipped":
        raw[len(raw) // 3] ^= 0x40
        bad.write_bytes(raw)
    else:
        bad.write_bytes(b"PK\x03\x04" + bytes(200))
    with pytest.raises(BankFileError) as refused:
        target.import_bank(bad)
    sentence = str(refused.value)
    assert sentence.endswith(".") and sentence.count(". ") == 0 and "\n" not in sentence
    assert snapshot(target) == before and files_of(target.home.data / "bank") == on_disk
    assert not any((target.home.data / "imports").iterdir())
    target.close()


# --- kill -9 ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_bank(tiny, embedder, tmp_path_factory) -> tuple[Path, Path]:
    """A bank of a few hundred tiny-model memories, and a home (already holding notes of its own) to
    import it into."""
    root = tmp_path_factory.mktemp("tinybank")
    source = engine_at(root / "source", embedder, model=tiny)
    source.add_folder(corpus(root / "docs" / "shared", files=60))
    source.scan()
    source.sync_memories(batch=64)
    source.export_bank(root / "tiny.m3bank")
    source.close()
    base = engine_at(root / "base", embedder, model=tiny)
    base.add_folder(corpus(root / "docs" / "own", files=4))
    base.scan()
    base.sync_memories()
    base.close()
    return root / "tiny.m3bank", root / "base"


def run_child(
    action: str, home: Path, tiny: Path, file: Path, cache: Path, kill_after: int | None
) -> list[str]:
    """Run the child until it has printed `kill_after` progress lines, then kill -9 it (None: let it
    finish); the progress lines it printed (with "done" last if it finished before the kill landed)."""
    child = subprocess.Popen(
        [sys.executable, str(CHILD), action, str(home), str(tiny), str(file), str(cache)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "ready"
    lines: list[str] = []
    while kill_after is None or len(lines) < kill_after:
        line = child.stdout.readline().strip()
        if line in ("done", ""):
            child.wait()
            return lines
        lines.append(line)
    child.send_signal(signal.SIGKILL)
    child.wait()
    return lines + [rest for rest in child.stdout.read().splitlines() if rest.strip() == "done"]


def test_kill_during_import_leaves_the_home_as_it_was_or_fully_imported(
    tiny_bank, tiny, embedder, embedder_cache, tmp_path
):
    bank, base = tiny_bank
    home = tmp_path / "full"
    shutil.copytree(base, home)
    lines = run_child("import", home, tiny, bank, embedder_cache, None)
    engine = engine_at(home, embedder, model=tiny)
    after = snapshot(engine)
    engine.close()
    engine = engine_at(base, embedder, model=tiny)
    before = snapshot(engine)
    engine.close()
    assert after != before
    commit = next(i for i, line in enumerate(lines) if line.startswith("applying"))  # just after the commit
    points = sorted(
        {0, 1, commit // 4, commit // 2, commit - 1, commit, commit + 1, (commit + len(lines)) // 2}
    )
    outcomes = []
    for kill_after in points:
        trial = tmp_path / f"trial-{kill_after}"
        shutil.copytree(base, trial)
        finished = run_child("import", trial, tiny, bank, embedder_cache, kill_after)[-1:] == ["done"]
        engine = engine_at(trial, embedder, model=tiny)
        if commit < kill_after and not finished:  # killed while applying: an import is pending
            assert engine.catalog.counts()["imports"] == 1
        engine.importer.resume()  # what the service's background work does at its next turn
        state = snapshot(engine)
        engine.close()
        assert state in (before, after), f"killed after {kill_after} of {len(lines)} progress lines"
        staging = trial / "data" / "imports"  # made by the import: a kill at once may come before it
        assert not staging.exists() or not any(staging.iterdir())
        outcomes.append(state == after)
    assert False in outcomes and True in outcomes  # killed both before and after the commit


def test_kill_during_export_leaves_no_file_under_its_name(tiny_bank, tiny, embedder_cache, tmp_path):
    _, base = tiny_bank
    home = tmp_path / "home"
    shutil.copytree(base, home)
    target = tmp_path / "out.m3bank"
    assert len(run_child("export", home, tiny, target, embedder_cache, kill_after=1)) == 1
    assert not target.exists()


def test_a_cancelled_import_changes_nothing_and_a_cancelled_export_writes_nothing(
    tiny_bank, tiny, embedder, tmp_path
):
    bank, base = tiny_bank
    home = tmp_path / "home"
    shutil.copytree(base, home)
    engine = engine_at(home, embedder, model=tiny)
    before = snapshot(engine)
    cancel = threading.Event()

    def stop_while(stage: str) -> Callable[[str, int, int], None]:
        return lambda at, done, total: cancel.set() if at == stage else None

    for stage in ("copying", "checking"):
        cancel.clear()
        with pytest.raises(BankFileCancelled):
            engine.import_bank(bank, on_progress=stop_while(stage), cancel=cancel)
        assert snapshot(engine) == before
        assert not any((home / "data" / "imports").iterdir())
    cancel.clear()
    with pytest.raises(BankFileCancelled):
        engine.export_bank(
            tmp_path / "out.m3bank", on_progress=stop_while("writing documents"), cancel=cancel
        )
    assert list(tmp_path.glob("*out.m3bank*")) == []  # neither the file nor its partial
    engine.close()


def rewritten(source: Path, target: Path, payload: Callable[[bytes], bytes]) -> Path:
    """`source` written again as a valid bank file (every checksum right) whose memory payloads went
    through `payload`: a hostile file that only the memory checks can catch."""
    reader = BankReader.open(source)
    m = reader.manifest
    with BankWriter(target) as writer:
        writer.add_section("documents", [msgspec.to_builtins(d) for d in reader.documents()])
        writer.add_section("chunks", [msgspec.to_builtins(c) for c in reader.chunks()])
        writer.add_section("memories", [(h, payload(p)) for h, p in reader.memories()])
        writer.add_section("vectors", list(reader.vectors()))
        fields = ("producer", "scope", "model", "profile", "embedder", "chunker")
        writer.finish(**{name: msgspec.to_builtins(getattr(m, name)) for name in fields})
    return target


def nan_scales(payload: bytes) -> bytes:
    memory = decode(payload)
    memory.k.scales[0, 0, 0, 0] = float("nan")
    return encode(memory)


def fewer_layers(payload: bytes) -> bytes:
    memory = decode(payload)
    memory.k = quantize(dequantize(memory.k, torch.float32)[:-1], memory.k.bits, memory.k.group)
    memory.v = quantize(dequantize(memory.v, torch.float32)[:-1], memory.v.bits, memory.v.group)
    memory.index, memory.layers = memory.index[:-1], memory.layers[:-1]
    return encode(memory)


@pytest.mark.parametrize("damage", [nan_scales, fewer_layers])
def test_a_bank_whose_memories_do_not_fit_this_model_is_refused(source, rt, embedder, tmp_path, damage):
    _, root, _ = source
    bad = rewritten(root / "all.m3bank", tmp_path / "bad.m3bank", damage)
    target = engine_at(tmp_path / "home", embedder, rt)
    before, on_disk = snapshot(target), files_of(target.home.data / "bank")
    with pytest.raises(BankFileError, match="NaN|shape|layers"):
        target.import_bank(bad)
    assert snapshot(target) == before and files_of(target.home.data / "bank") == on_disk
    target.close()


def test_export_refuses_targets_it_must_not_replace(source, tmp_path):
    engine, _, _ = source
    os.mkfifo(tmp_path / "pipe")
    for target, match in [
        (engine.home.data / "catalog.db", "inside memory3's own folder"),
        (engine.home.data / "new.m3bank", "inside memory3's own folder"),
        (tmp_path / "pipe", "not a regular file"),
        (tmp_path, "is a folder"),
        (tmp_path / "missing" / "x.m3bank", "does not exist"),
        (Path("/proc/x.m3bank"), "cannot be written"),
        (tmp_path / "a\0b.m3bank", "NUL"),
    ]:
        with pytest.raises(BankFileError, match=match):
            engine.export_bank(target)
    with pytest.raises(BankFileError, match="NUL"):
        engine.import_bank(tmp_path / "a\0b.m3bank")
    assert stat.S_ISFIFO(os.stat(tmp_path / "pipe").st_mode)


def test_an_absolute_glob_stays_out_of_the_file(source, tmp_path):
    engine, root, _ = source
    engine.export_bank(tmp_path / "glob.m3bank", documents=f"{root}/docs/notes/*")
    manifest = BankReader.open(tmp_path / "glob.m3bank").manifest
    assert manifest.scope.kind == "documents" and manifest.scope.value is None
    assert str(root).encode() not in (tmp_path / "glob.m3bank").read_bytes()
    secret = root.name  # a piece of a folder's name, matched against the full path
    engine.export_bank(tmp_path / "piece.m3bank", documents=f"*{secret}*")
    assert secret.encode() not in (tmp_path / "piece.m3bank").read_bytes()


def test_an_imported_collection_keeps_its_label_beside_a_watched_folder_of_that_name(
    source, rt, embedder, tmp_path
):
    """Exported together, the collection `notes` stays `notes` and the watched folder called notes
    becomes notes-2: importing that file into the same home adds the folder's copy and changes nothing
    of the collection."""
    _, root, _ = source
    home = engine_at(tmp_path / "home", embedder, rt)
    home.import_bank(root / "all.m3bank")
    (tmp_path / "mine" / "notes").mkdir(parents=True)
    (tmp_path / "mine" / "notes" / "todo.md").write_text("# Todo\n\nWater the roses by the gate.\n")
    home.add_folder(tmp_path / "mine" / "notes")
    home.scan()
    home.sync_memories()
    collection = snapshot(home)["chunks"]
    home.export_bank(tmp_path / "both.m3bank")
    labels = {d.label for d in BankReader.open(tmp_path / "both.m3bank").documents()}
    assert labels == {"garden", "notes", "notes-2"}
    plan = home.import_bank(tmp_path / "both.m3bank").plan
    assert (plan.new_collections, plan.documents_new, plan.documents_replaced) == (["notes-2"], 1, 0)
    after = snapshot(home)["chunks"]
    assert [c for c in after if c["path"] != "notes-2"] == collection
    home.close()


def test_an_empty_bank_is_refused(source, tmp_path):
    engine, root, _ = source
    empty = tmp_path / "empty.m3bank"
    reader = BankReader.open(root / "all.m3bank")
    with BankWriter(empty) as writer:
        writer.add_section("documents", [])
        writer.add_section("chunks", [])
        fields = ("producer", "scope", "model", "profile", "embedder", "chunker")
        writer.finish(**{name: msgspec.to_builtins(getattr(reader.manifest, name)) for name in fields})
    with pytest.raises(BankFileError, match="nothing to import"):
        engine.import_bank(empty)


def test_a_bank_never_supplies_the_memory_of_a_text_already_here(source, rt, embedder, tmp_path):
    """The vault note is also a local file whose memory is not written yet: the import brings only the
    garden's memory, and the vault's is written here from the local text."""
    _, root, _ = source
    target = engine_at(tmp_path / "home", embedder, rt)
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "vault.md").write_text(VAULT)
    target.add_folder(tmp_path / "local")
    target.scan()
    [vault] = [r["hash"] for r in target.catalog.rows("SELECT hash FROM chunks")]
    plan = target.import_bank(root / "all.m3bank").plan
    assert (plan.memories_import, plan.memories_write) == (1, 0)
    assert vault not in target.bank and len(target.bank.keys()) == 1  # the garden's, from the file
    assert target.catalog.counts()["memories_to_write"] == 1
    assert target.sync_memories() == 1 and vault in target.bank
    target.close()


def test_removing_a_collection_leaves_nothing_behind(source, rt, embedder, tmp_path):
    _, root, _ = source
    target = engine_at(tmp_path / "home", embedder, rt)
    target.import_bank(root / "all.m3bank")
    assert len(target.retriever) == 2 and len(target.bank.keys()) == 2
    for label in ("notes", "garden"):
        target.remove_collection(label)
    target.sync_memories()  # drops what no document uses any more
    assert target.catalog.counts()["chunks"] == 0
    assert len(target.retriever) == 0 and target.bank.keys() == []
    with pytest.raises(NotFoundError, match="no imported collection named 'notes'"):
        target.remove_collection("notes")
    target.close()
