"""Bank files in words, the same in the app and the `m3` command: a progress step, an export's result,
and a file's manifest, verdict and plan (a rich Text: the app styles it, the command prints it plain)."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from assistant.units import human_bytes
from engine.service.client import BankProgress, BankReport, Exported

BYTE_STAGES = ("copying", "checking")  # counted in bytes; the other stages count records


def stage_line(event: BankProgress) -> str:
    """'checking: 1.2 MiB of 3.4 MiB', 'writing memories: 120 of 300'."""
    if event.stage in BYTE_STAGES:
        return f"{event.stage}: {human_bytes(event.done)} of {human_bytes(event.total)}"
    return f"{event.stage}: {event.done:,} of {event.total:,}"


def exported_text(done: Exported) -> str:
    said = (
        f"Wrote {done.path} ({human_bytes(done.bytes)}): {done.documents:,} documents, {done.chunks:,} "
        f"chunks, {done.memories:,} memories, {done.vectors:,} vectors."
    )
    return "\n".join([said] + [f"Left out: {sentence}" for sentence in done.skipped])


def _get(table: Any, *keys: str) -> Any:
    """A manifest's field, '?' where a (hostile or older) file lacks it."""
    for key in keys:
        if not isinstance(table, dict) or key not in table:
            return "?"
        table = table[key]
    return table


def _section(x: dict) -> str:
    return f"{_get(x, 'name')} {human_bytes(x.get('length', 0))} ({_get(x, 'records')} records)"


def report_text(path: str, r: BankReport) -> Text:
    """What a bank file holds and what importing it does (or did): its manifest in short, the verdict's
    reasons, and the plan. Names come from the file, so they are never read as markup."""
    m, v, p = r.manifest, r.verdict, r.plan
    counts = _get(m, "counts")
    scope = f"{_get(m, 'scope', 'kind')}" + (f" {m['scope']['value']}" if _get(m, "scope", "value") else "")
    lines = [
        (f"{path} ({human_bytes(r.file_bytes)})", "bold"),
        f"Made by {_get(m, 'producer')} on {_get(m, 'created')}; scope: {scope}.",
        f"Holds {_get(counts, 'documents')} documents, {_get(counts, 'chunks')} chunks, "
        f"{_get(counts, 'memories')} memories, {_get(counts, 'vectors')} vectors.",
        f"Model: {_get(m, 'model', 'name')} ({_get(m, 'model', 'arch')},"
        f" {_get(m, 'model', 'n_layer')} layers, fingerprint {str(_get(m, 'model', 'fingerprint'))[:16]});"
        f" profile {_get(m, 'profile', 'name')}; embedder {_get(m, 'embedder', 'name')}.",
        "Sections: " + ", ".join(_section(x) for x in _get(m, "sections") if isinstance(x, dict)) + ".",
        "",
        ("Verdict", "bold"),
    ]
    if not v.reasons:
        lines.append("Compatible: its memories and vectors are used as they are.")
    lines += [f"· {reason}" for reason in v.reasons]
    new = f" (new: {', '.join(p.new_collections)})" if p.new_collections else ""
    lines += [
        "",
        ("Imported" if r.imported else "Importing it", "bold"),
        f"Collections: {', '.join(p.collections) or 'none'}{new}.",
        f"Documents: {p.documents_new:,} new, {p.documents_replaced:,} replaced, "
        f"{p.documents_unchanged:,} unchanged.",
        f"Memories: {p.memories_import:,} from the file, {p.memories_present:,} already here, "
        f"{p.memories_write:,} to write here.",
        f"Vectors: {p.vectors_import:,} from the file, {p.vectors_present:,} already here, "
        f"{p.vectors_embed:,} to embed here.",
    ]
    if r.pending:
        lines.append("The engine is still applying its memories and vectors in the background.")
    text = Text()
    for i, line in enumerate(lines):
        words, style = (line, None) if isinstance(line, str) else line
        text.append(("\n" if i else "") + words, style)
    return text
