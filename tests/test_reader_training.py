"""`m3 train reader --quick` on the in-repo QA excerpt: the reader file, its curve, and the engine reading
memories through it (or refusing a reader file that does not fit, in one sentence)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import reader_training, train_reader
from bench.errors import BenchmarkError
from engine import Engine
from engine.errors import ReaderFileError, UnknownProfileError
from engine.memory.reader import BUNDLED, MemoryReader

FIXTURE = Path(__file__).parent / "data" / "qa"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, home, model_path) -> tuple[dict, Path]:
    """A quick training with the default destination (beside its results, never the bundled reader), on
    memories of a profile other than the configured one."""
    bundled = BUNDLED.read_bytes()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("M3_QA_DATA", str(FIXTURE))
        out = tmp_path_factory.mktemp("reader")
        results, table = train_reader(out, home, model_path, quick=True, profile="dense-int4-parallel")
    assert "validation KL" in table and BUNDLED.read_bytes() == bundled
    assert results["reader"] == str(out / "memory-reader.safetensors")
    return results, out


def test_a_reader_that_cannot_be_written_stops_training_before_it_starts(
    home, model_path, tmp_path, monkeypatch
):
    monkeypatch.setenv("M3_QA_DATA", str(FIXTURE))
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(BenchmarkError, match="Cannot write the memory reader"):
        train_reader(tmp_path / "out", home, model_path, reader_path=tmp_path / "a-file" / "r.safetensors")


@pytest.mark.parametrize(
    ("profile", "quick", "where"),
    [
        ("dense-parallel", False, "bundled"),
        ("top43-int4-parallel", False, "out/memory-reader-top43-int4-parallel.safetensors"),
        ("dense-parallel", True, "out/memory-reader.safetensors"),
    ],
)
def test_only_the_default_profiles_reader_replaces_the_bundled_one(
    home, model_path, tmp_path, monkeypatch, profile, quick, where
):
    """Without --reader: the default profile's reader is the bundled one (assets/); another profile's goes
    beside the results, named by its profile; a quick check's beside the results. (The destination is
    chosen and checked before anything loads: the check is stopped here to see it.)"""
    monkeypatch.setenv("M3_QA_DATA", str(FIXTURE))
    chosen = []

    def stop(path: Path) -> None:
        chosen.append(path)
        raise KeyboardInterrupt

    monkeypatch.setattr(reader_training, "_check_writable", stop)
    with pytest.raises(KeyboardInterrupt):
        train_reader(tmp_path / "out", home, model_path, quick=quick, profile=profile)
    assert chosen == [BUNDLED if where == "bundled" else tmp_path / where]


def test_an_unknown_profile_stops_training_in_one_sentence(home, model_path, tmp_path, monkeypatch):
    monkeypatch.setenv("M3_QA_DATA", str(FIXTURE))
    with pytest.raises(
        UnknownProfileError, match=r"^There is no memory profile 'sparse'; choose one of dense, "
    ):
        train_reader(tmp_path, home, model_path, quick=True, profile="sparse")


def test_quick_training_writes_the_reader_its_curve_and_its_provenance(trained):
    results, out = trained
    assert json.loads((out / "reader.json").read_text()) == results
    assert (out / "reader-loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curve = results["curve"]
    assert (
        curve["step"] == list(range(1, results["steps"] + 1)) and len(curve["train_kl"]) == results["steps"]
    )
    assert curve["validation_step"] == [0, results["steps"]] and all(k >= 0 for k in curve["validation_kl"])
    assert "XQuAD" in results["provenance"] and "no held-out article" in results["provenance"]
    assert (
        results["profile"] == "dense-int4-parallel"
        and "dense-int4-parallel memories" in results["provenance"]
    )
    assert set(results["articles"]["train"]).isdisjoint(results["articles"]["validation"])
    assert all(a < 2 for a in results["articles"]["train"])  # tuning articles only (the fixture has 2 a half)


def test_the_engine_reads_memories_through_the_configured_reader(trained, rt, roots):
    _, out = trained
    engine = Engine.open(roots(f"[engine]\nreader = '{out / 'memory-reader.safetensors'}'\n"), runtime=rt)
    assert engine.reader.name == "distilled-dense-int4-parallel" and engine.chat.reader is engine.reader
    config = rt.model.config
    MemoryReader.load(
        out / "memory-reader.safetensors", rt.fingerprints[0], (config.n_layer, config.n_kv_head)
    )
    engine.close()


def test_a_reader_file_that_does_not_fit_is_one_sentence(rt, roots, tmp_path):
    engine = Engine.open(roots(f"[engine]\nreader = '{tmp_path / 'nothing-here.safetensors'}'\n"), runtime=rt)
    with pytest.raises(ReaderFileError, match=r"^\[engine\] reader = .*nothing-here.* does not exist"):
        engine.load()
    engine.close()
    assert Engine.open(roots("[engine]\nreader = 'base'\n"), runtime=rt).reader is None
