"""`m3 doctor`: check the model, embedder, catalog, vector index and bank, and repair what can be rebuilt
from the text (an index from the stored vectors, lost memories by writing them again)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engine.errors import M3Error
from engine.facade import Engine


@dataclass(frozen=True)
class Check:
    """One line of `m3 doctor`: what was checked, whether it is (now) fine, and what was found or done."""

    name: str
    ok: bool
    detail: str


def run(engine: Engine) -> list[Check]:
    """Check model, reader, embedder, catalog, index and bank, repairing what can be rebuilt from the
    text."""
    checks: list[Check] = []

    def check(name: str, probe: Callable[[Engine], tuple[bool, str]]) -> None:
        try:
            ok, detail = probe(engine)
        except M3Error as exc:
            ok, detail = False, str(exc)
        checks.append(Check(name, ok, detail))

    check("model", lambda e: (True, e.description))
    check("reader", _check_reader)
    check("embedder", _check_embedder)
    check("catalog", _check_catalog)
    check("index", _check_index)
    check("bank", _check_bank)
    return checks


def _check_reader(engine: Engine) -> tuple[bool, str]:
    """Which reader memory mode reads through (a reader file that cannot be used stops the engine from
    loading at all, with its sentence)."""
    reader, setting = engine.reader, engine.config.reader
    if reader is not None:
        return True, f"{reader.name} ({'the bundled reader' if setting == 'trained' else setting})"
    if setting == "trained":
        return True, "base: the bundled reader was trained for another model"
    return True, "base: memories are read as the model reads text"


def _check_embedder(engine: Engine) -> tuple[bool, str]:
    embedder = engine.retriever.embedder
    a, b, c = embedder.embed(["a red apple", "a crimson apple", "tax law of 1854"])
    ok = float(a @ b) > float(a @ c)
    return ok, f"{embedder.name} on {embedder.device}" + ("" if ok else ": similar texts are not closer")


def _check_catalog(engine: Engine) -> tuple[bool, str]:
    result = engine.catalog.db.execute("PRAGMA integrity_check").fetchone()[0]
    counts = engine.catalog.counts()
    return (
        result == "ok",
        f"{counts['documents']} documents, {counts['chunks']} chunks; integrity {result}",
    )


def _check_index(engine: Engine) -> tuple[bool, str]:
    problems = engine.retriever.check()
    if not problems:
        return True, f"{len(engine.retriever)} chunks indexed"
    engine.retriever.repair()
    left = engine.retriever.check()
    return not left, "; ".join(problems) + (" — rebuilt" if not left else f" — still: {'; '.join(left)}")


def _check_bank(engine: Engine) -> tuple[bool, str]:
    problems = engine.bank.verify()
    if not problems:
        return True, f"{len(engine.bank.keys())} memories, all checksums valid"
    report = engine.bank.repair()
    engine.catalog.complete_memory_work(dropped=report.lost)  # written again by the next ingest
    left = engine.bank.verify()
    detail = f"{len(problems)} problems; {len(report.lost)} memories lost and queued to be written again"
    return not left, detail + ("" if not left else f"; still: {'; '.join(left)}")
