"""Hybrid retrieval on the real embedder, real SQLite FTS5 and real hnswlib, including damage and repair."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import IndexDamagedError, IndexMismatchError, RetrievalError
from engine.retrieval.embedder import Embedder
from engine.retrieval.exact import ExactVectors
from engine.retrieval.fusion import fuse
from engine.retrieval.keyword import fts_query, query_pieces, tokens
from engine.retrieval.retriever import Retriever
from engine.retrieval.vector_index import VectorIndex
from ingest.parsers import parse

CORPUS = {
    "cat": "The cat slept all afternoon on the warm windowsill.",
    "revenue": "Quarterly revenue grew by twelve percent thanks to strong sales in Europe.",
    "dentist": "My dentist appointment was moved to Thursday morning at nine.",
    "volcano": "The volcano erupted, covering the village in a thick layer of ash.",
    "recipe": "Whisk the eggs with sugar, then fold in the flour and bake for forty minutes.",
    "python": "Python lists are mutable sequences; tuples cannot be changed after creation.",
    "football": "The striker scored twice in the final minutes to win the championship.",
    "piano": "She practised the piano sonata every evening before the recital.",
}
QUERIES = {
    "cat": "Where did the kitten nap?",
    "volcano": "eruption buried the town under ash",
    "recipe": "how long does the cake bake",
    "football": "who won the soccer final",
}
HOSTILE = [
    'he said "hello',
    "*",
    "-",
    "AND",
    "cat AND",
    "(volcano OR",
    "NOT NEAR(a b, 3)",
    "col:value ^start",
    '"""',
    "a + b - c * d / e",
    "",
    "   ",
    "\x00\x01",
    "émoji 🐍 👍🏽",
]


@pytest.fixture(scope="module")
def embedder(embedder_cache: Path) -> Embedder:
    return Embedder.load(embedder_cache)


def items(names: Sequence[str] = tuple(CORPUS)) -> list[tuple[str, str]]:
    return [(name, CORPUS[name]) for name in names]


@pytest.fixture
def folder(tmp_path: Path, embedder: Embedder) -> Path:
    """A retrieval folder holding the corpus, saved and closed."""
    with Retriever(tmp_path / "retrieval", embedder) as r:
        r.add(items())
    return tmp_path / "retrieval"


def assert_finds_corpus(r: Retriever) -> None:
    for name, query in QUERIES.items():
        assert r.search(query, k=3)[0].hash == name, query


def test_add_search_delete(tmp_path: Path, embedder: Embedder) -> None:
    with Retriever(tmp_path, embedder) as r:
        assert r.search("anything") == []
        assert r.add(items()) == len(CORPUS)
        assert r.add([("cat", "ignored: same hash"), ("cat", "twice in one call")]) == 0
        assert len(r) == len(r.index) == len(CORPUS)
        assert_finds_corpus(r)
        hits = r.search(QUERIES["cat"], k=len(CORPUS))
        assert len(hits) == len(CORPUS) and len({h.hash for h in hits}) == len(CORPUS)
        assert hits == sorted(hits, key=lambda h: -h.score)

        assert r.delete(["cat", "volcano", "no-such-hash"]) == 2
        assert len(r) == len(r.index) == len(CORPUS) - 2
        for query in (QUERIES["cat"], CORPUS["cat"], QUERIES["volcano"], "volcano ash cat windowsill"):
            assert {"cat", "volcano"}.isdisjoint(h.hash for h in r.search(query, k=10))
        assert r.search(QUERIES["recipe"])[0].hash == "recipe"

        assert r.add(items(["cat"])) == 1  # back under a fresh id
        assert r.search(QUERIES["cat"])[0].hash == "cat"
        assert r.check() == []


def test_persists_across_reopen_without_rebuilding(
    folder: Path, embedder: Embedder, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING), Retriever(folder, embedder) as r:
        assert len(r) == len(CORPUS)
        assert_finds_corpus(r)
        r.delete(["piano"])
    with caplog.at_level(logging.WARNING), Retriever(folder, embedder) as r:
        assert len(r) == len(r.index) == len(CORPUS) - 1
        assert "piano" not in {h.hash for h in r.search(CORPUS["piano"], k=10)}
        assert r.check() == []
    assert not caplog.records


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def _other_embedder(path: Path) -> None:
    meta = json.loads(path.read_text())
    path.write_text(json.dumps(meta | {"embedder": "other-model", "dim": 768}))


def _garbage(path: Path) -> None:
    path.write_text("{not json")


@pytest.mark.parametrize(
    ("file", "damage"),
    [
        ("index.bin", _truncate),
        ("index.bin", _random_bytes),
        ("index.bin", Path.unlink),
        ("meta.json", _other_embedder),
        ("meta.json", _garbage),
        ("meta.json", Path.unlink),
        (".", shutil.rmtree),
    ],
    ids=["truncated", "random", "no-index", "other-embedder", "bad-meta", "no-meta", "no-folder"],
)
def test_damaged_index_is_rebuilt(
    folder: Path, embedder: Embedder, file: str, damage, caplog: pytest.LogCaptureFixture
) -> None:
    damage(folder / "hnsw" / file)
    with caplog.at_level(logging.WARNING), Retriever(folder, embedder) as r:
        assert len(r.index) == len(CORPUS)
        assert_finds_corpus(r)
    assert "rebuilding the vector index" in caplog.text
    with Retriever(folder, embedder) as r:
        assert r.check() == []


def test_vector_index_refuses_damage_and_foreign_folders(folder: Path) -> None:
    hnsw = folder / "hnsw"
    with pytest.raises(IndexMismatchError):
        VectorIndex.open(hnsw, "other-model", 384)
    with pytest.raises(IndexMismatchError):
        VectorIndex.open(hnsw, "all-MiniLM-L6-v2", 768)
    _truncate(hnsw / "index.bin")
    with pytest.raises(IndexDamagedError):
        VectorIndex.open(hnsw, "all-MiniLM-L6-v2", 384)


def test_unsaved_changes_are_recovered_from_the_database(
    folder: Path, embedder: Embedder, caplog: pytest.LogCaptureFixture
) -> None:
    crashed = Retriever(folder, embedder)  # as if the process died: never closed, index never saved
    crashed.delete(["cat"])
    crashed.add([("harbour", "Fishing boats returned to the harbour at dawn with full nets.")])
    with caplog.at_level(logging.WARNING), Retriever(folder, embedder) as r:
        assert len(r.index) == len(CORPUS)
        assert r.search("fishing boats coming home")[0].hash == "harbour"
        assert "cat" not in {h.hash for h in r.search(CORPUS["cat"], k=10)}
    assert "rebuilding the vector index" in caplog.text
    crashed._db.close()


class _OtherEmbedder:
    """Stands in for a previous embedder: same dimension, unrelated vectors."""

    name, dim = "other-model", 384

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        rng = np.random.default_rng(len(texts))
        v = rng.standard_normal((len(texts), self.dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_vectors_of_another_embedder_are_recomputed(
    tmp_path: Path, embedder: Embedder, caplog: pytest.LogCaptureFixture
) -> None:
    with Retriever(tmp_path, _OtherEmbedder()) as r:
        r.add(items())
    with caplog.at_level(logging.WARNING), Retriever(tmp_path, embedder) as r:
        assert_finds_corpus(r)
        assert r.check() == []
    assert "re-embedding 8 chunks" in caplog.text


def test_check_finds_problems_and_repair_fixes_them(folder: Path, embedder: Embedder) -> None:
    with Retriever(folder, embedder) as r:
        r.index.delete(r.keyword_search("volcano", 1))  # the vector index loses a chunk
        with r._db:
            r._db.execute("INSERT INTO items_fts(items_fts) VALUES ('delete-all')")  # and FTS loses all
        problems = r.check()
        assert any("keyword index" in p for p in problems)
        assert any("vector index holds 7 vectors for 8 chunks" in p for p in problems)
        r.repair()
        assert r.check() == []
        assert r.keyword_search("volcano", 5) != []
        assert_finds_corpus(r)


def test_a_damaged_database_is_a_clear_error(tmp_path: Path, embedder: Embedder) -> None:
    (tmp_path / "retrieval.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RetrievalError, match="not a usable retrieval database"):
        Retriever(tmp_path, embedder)


@pytest.mark.parametrize("query", HOSTILE)
def test_fts_hostile_queries_do_not_raise(folder: Path, embedder: Embedder, query: str) -> None:
    with Retriever(folder, embedder) as r:
        r.search(query)
        assert r.keyword_search("volcano", 1)[0] in r.keyword_search(f"{query} volcano", 5)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder):
    with Retriever(tmp_path_factory.mktemp("shared"), embedder) as r:
        r.add(items())
        yield r


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_is_a_valid_keyword_query(shared: Retriever, text: str) -> None:
    assert isinstance(shared.keyword_search(text, 5), list)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_focus_of_any_text_keeps_some_of_the_hits_in_order(shared: Retriever, text: str) -> None:
    hits = shared.search(text, 5)
    kept = shared.focus(text, hits)
    assert bool(kept) == bool(hits)
    assert [h for h in hits if h in kept] == kept


def test_keyword_queries_are_quoted_pieces() -> None:
    """Pieces are in keyword form (tests/test_keyword.py): words, whatever FTS5 syntax was typed."""
    pieces = query_pieces('Part "XJ-4471" AND (valve*) * - ^ : _ part')
    assert pieces == ["part", "xj 4471", "and", "valve"]
    assert fts_query(pieces) == '"part" OR "xj 4471" OR "and" OR "valve"'
    assert fts_query(['say "hi"']) == '"say ""hi"""'
    assert tokens("Crème-BRÛLÉE_2") == ["creme", "brulee", "2"]


def test_keyword_search_skips_words_in_most_chunks(folder: Path, embedder: Embedder) -> None:
    with Retriever(folder, embedder) as r:
        assert r.keyword_search("the", 10) == []  # in 6 of the 8 chunks: no weight, only cost
        assert r.keyword_search("the volcano", 10) == r.keyword_search("volcano", 10) != []
        assert r.keyword_search("volcano word1 word2", 10) == r.keyword_search("volcano", 10)


def test_a_keyword_only_match_is_found_through_fusion(tmp_path: Path, embedder: Embedder) -> None:
    """A part number buried in unrelated prose: the embedder ranks it last, keywords find it first."""
    codes = [f"ZK-9917{d}-{letter}" for d in range(10) for letter in "ABC" if (d, letter) != (2, "B")]
    target = (
        "The spring fair drew large crowds to the harbour, where bakers sold bread, musicians played "
        "until dusk, and a crate labelled ZK-99172-B waited by the gate."
    )
    with Retriever(tmp_path, embedder) as r:
        r.add([(code, f"{code} spare") for code in codes] + [("target", target)])
        vector_ids = r.vector_search(embedder.embed(["Where is ZK-99172-B?"])[0], 50)
        target_id = r.keyword_search("ZK-99172-B", 1)[0]
        assert vector_ids.index(target_id) >= 5  # the embedder alone would miss it
        top = r.search("Where is ZK-99172-B?", k=5)[0]
        assert (top.hash, top.keyword_rank) == ("target", 1)
        assert top.vector_rank > 5


def test_what_a_user_types_finds_what_the_document_shows(tmp_path: Path, embedder: Embedder) -> None:
    """A PDF's ligature and a full-width name, as parsing normalises them (NFKC), found by what is typed;
    and a query typed full-width finds plain text."""
    doc = tmp_path / "report.txt"
    doc.write_text("The ﬁnance team met Ｔｅｓｌａ about the ZX-41 budget.\n")
    text = parse(doc).text
    assert text == "The finance team met Tesla about the ZX-41 budget.\n"
    with Retriever(tmp_path / "retrieval", embedder) as r:
        r.add([("report", text), *items()])
        assert r.keyword_search("finance Tesla", 1) == r.keyword_search("ﬁnance Ｔｅｓｌａ", 1) != []
        assert r.search("Ｔｅｓｌａ ＺＸ-41", k=1)[0].hash == "report"


def test_fuse_is_reciprocal_rank_fusion() -> None:
    fused = fuse([1, 2, 3], [3, 4], k=3)
    assert [i for i, *_ in fused] == [3, 1, 2]
    assert fused[0] == (3, pytest.approx(1 / 63 + 1 / 61), 3, 1)
    assert fused[1] == (1, pytest.approx(1 / 61), 1, None)


BRIDGES = {
    f"bridge-{name}": f"The {name} Bridge crosses the river {river}. It was opened in the year {year}."
    for name, river, year in (
        ("Griadipou", "Aldwen", 1696),
        ("Thehis", "Morrow", 1754),
        ("Quezaim", "Tessel", 1822),
        ("Belothwick", "Quill", 1903),
    )
}


def test_focus_keeps_the_hits_that_name_what_the_question_names(tmp_path: Path, embedder: Embedder) -> None:
    """Four bridges' years: the question names one, so only its chunk is read; naming two keeps both
    (words tied for rarest count alike); one about bridges keeps the bridges. Every hit is kept, in order,
    when neither the best hit nor keyword search's best holds the rarest word (a typo, a word of another
    note), when that word is in more chunks than the hits or in half of all, and for scripts written
    without spaces (bigrams, not words)."""
    question = "In what year was the Griadipou Bridge opened?"
    with Retriever(tmp_path, embedder) as r:
        r.add([*BRIDGES.items(), *items()])
        hits = r.search(question, k=5)
        assert hits[0].hash == "bridge-Griadipou" and len(hits) == 5
        assert [h.hash for h in r.focus(question, hits)] == ["bridge-Griadipou"]
        assert r.keywords.rarest(question.lower(), 5, len(r)) == ["griadipou"]
        assert r.focus(question, hits[1:]) == hits[1:]  # no hit names it: all kept
        assert hits[0].keyword_rank == 1
        assert r.focus(question, [*hits[1:], hits[0]]) == [hits[0]]  # keyword search's best holds it
        vague = [*hits[1:], replace(hits[0], keyword_rank=2)]  # neither the best hit nor keywords' best
        assert r.focus(question, vague) == vague
        both = "Which opened first, the Griadipou Bridge or the Thehis Bridge?"
        assert r.keywords.rarest(both, 5, len(r)) == ["griadipou", "thehis"]
        named = [h.hash for h in r.focus(both, r.search(both, k=5))]
        assert sorted(named) == ["bridge-Griadipou", "bridge-Thehis"]
        general = r.search("In what year was the bridge opened?", k=5)
        bridges = [h for h in general if h.hash.startswith("bridge-")]
        assert len(bridges) == 4 and r.focus("In what year was the bridge opened?", general) == bridges
        few = r.search("In what year was the bridge opened?", k=3)  # its rarest words are in 4 chunks
        assert r.keywords.rarest("In what year was the bridge opened?", 3, len(r)) == []
        assert r.focus("In what year was the bridge opened?", few) == few
        assert r.keywords.rarest("griadipou", 5, total=2) == []  # in half the chunks: no weight
        assert r.focus("anything", []) == []
    with Retriever(tmp_path / "cjk", embedder) as r:
        r.add([("tower", "东京塔于1958年建成。"), ("bridge", "这座老桥是哪一年修的，没有人知道。"), *items()])
        tower = "东京塔是哪一年建成的？"
        assert r.keywords.rarest(tower, 5, len(r)) == []  # 一年 of 哪一年 is no word
        assert r.focus(tower, r.search(tower, k=5)) == r.search(tower, k=5)


def test_vector_index_grows_keeps_deleted_vectors_marked_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((1500, 16)).astype(np.float32)
    index = VectorIndex(tmp_path, "test", 16)
    index.add(np.arange(1000), vectors[:1000])
    index.add(np.arange(1000, 1500), vectors[1000:])  # past the initial capacity of 1024
    index.delete([*range(100), 99999])
    index.delete(range(50))  # already deleted: ignored
    assert len(index) == 1400 and not index.worn
    index.add(np.arange(2000, 2050), vectors[:50])
    assert len(index) == 1450
    index.generation = 7
    index.save()

    again = VectorIndex.open(tmp_path, "test", 16)
    assert (len(again), again.generation, again.worn) == (1450, 7, False)
    assert again.search(vectors[500], 1)[0] == (500, pytest.approx(1.0, abs=1e-5))
    assert again.search(vectors[10], 1)[0][0] == 2010
    assert all(i >= 100 for i, _ in again.search(vectors[60], 20))
    assert len(again.search(vectors[0], 5000)) == 1450
    again.delete(range(100, 400))  # 400 deleted against 1150 live: over REBUILD_AT
    assert again.worn


def test_deletions_past_a_quarter_of_the_live_chunks_rebuild_the_index(tmp_path: Path, embedder: Embedder):
    """Deleted vectors stay in hnswlib's graph as marks; past REBUILD_AT `compact` rebuilds it from the
    stored vectors, so the graph never holds mostly dead nodes; the rebuilt index is the one saved."""
    names = [n for n in CORPUS if n != "recipe"]
    with Retriever(tmp_path, embedder) as r:
        r.add(items())
        r.delete(names[:1])
        assert not r.compact() and r.index._index.get_current_count() == len(CORPUS)  # one mark: kept
        r.delete(names[1:6])
        assert r.index.worn and r.index._index.get_current_count() == len(CORPUS)
        assert r.compact()
        assert r.index._index.get_current_count() == len(r) == len(CORPUS) - 6  # rebuilt without them
        assert not r.index.worn and not r.compact() and r.check() == []
        assert r.search(QUERIES["recipe"])[0].hash == "recipe"
    saved = VectorIndex.open(tmp_path / "hnsw", embedder.name, embedder.dim)
    assert saved._index.get_current_count() == len(saved) == len(CORPUS) - 6


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 2**31 - 1)), min_size=1, max_size=30),
    st.integers(0, 2**31 - 1),
)
def test_exact_vectors_are_the_brute_force_nearest_through_adds_and_deletes(ops, seed) -> None:
    """ExactVectors after any adds and deletes ranks the live vectors as a brute-force cosine does."""
    rng, dim = np.random.default_rng(seed), 8
    live: dict[int, np.ndarray] = {}
    exact, next_id = ExactVectors(dim, np.empty(0, np.int64), np.empty((0, dim))), 0
    for add, draw in ops:
        if add or not live:
            n = draw % 40 + 1
            vectors = rng.normal(size=(n, dim)).astype(np.float32)
            ids = np.arange(next_id, next_id + n)
            exact.add(ids, vectors)
            live.update(zip(ids.tolist(), vectors, strict=True))
            next_id += n
        else:
            gone = [i for i in live if (i + draw) % 3 == 0] + [next_id + 5]  # and one never added
            exact.delete(gone)
            for i in gone:
                live.pop(i, None)
    assert len(exact) == len(live)
    query = rng.normal(size=dim).astype(np.float32)
    got = exact.search(query, 5)
    if not live:
        assert got == []
        return
    ids = np.array(list(live))
    rows = np.stack(list(live.values()))
    cosine = rows @ query / (np.linalg.norm(rows, axis=1) * np.linalg.norm(query))
    assert [i for i, _ in got] == ids[np.argsort(-cosine, kind="stable")[:5]].tolist()
    ties = ExactVectors(dim, np.arange(50), np.ones((50, dim)))  # equal scores: the earlier added first
    assert [i for i, _ in ties.search(np.ones(dim), 3)] == [0, 1, 2]
    assert np.allclose([s for _, s in got], np.sort(cosine)[::-1][:5], atol=1e-5)


def test_vector_search_is_exact_while_the_chunks_are_few(
    tmp_path: Path, embedder: Embedder, monkeypatch
) -> None:
    """Up to EXACT_UP_TO chunks the retriever's vector search reads every stored vector, so a node the HNSW
    graph cannot reach (here: the graph emptied behind its back) is still found, and deletions leave it;
    with more chunks than that, the graph alone answers."""
    query = embedder.embed([QUERIES["volcano"]])[0]
    with Retriever(tmp_path / "retrieval", embedder) as r:
        r.add(items())
        assert r.exact is not None and len(r.exact) == len(CORPUS)
        r.index.rebuild(np.empty(0, np.int64), np.empty((0, embedder.dim), np.float32))
        assert list(r.hashes(r.vector_search(query, 1)).values()) == ["volcano"]
        r.delete(["volcano"])
        assert len(r.exact) == len(CORPUS) - 1
        assert "volcano" not in r.hashes(r.vector_search(query, len(CORPUS))).values()
    monkeypatch.setattr("engine.retrieval.retriever.EXACT_UP_TO", len(CORPUS) - 2)
    with Retriever(tmp_path / "retrieval", embedder) as r:  # reopened with more than that: the graph
        assert r.exact is None and len(r.vector_search(query, 3)) == 3
        r.delete(["cat"])  # back down to the limit: exact again
        assert r.exact is not None and len(r.exact) == len(CORPUS) - 2 == len(r)
        r.add(items(["volcano"]))  # past it: the graph alone
        assert r.exact is None
        r.index.rebuild(np.empty(0, np.int64), np.empty((0, embedder.dim), np.float32))
        assert r.vector_search(query, 3) == []
