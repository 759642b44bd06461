"""The reconciling scan: make the catalog match the disk, whatever happened while nobody was watching.

A file whose size and mtime match its document is taken as unchanged without reading it. Otherwise its
content hash decides: same hash, only the stat is updated; new hash, the document is queued for parsing.
A document whose file vanished while a new file with the same bytes appeared is a move: the document
keeps its id, chunks and memories. Everything else that vanished is deleted; what vanished in a watcher's
batch is held one more debounce window first, since its create may come in the next batch (a file moved
into a folder created a moment earlier, whose watch was not there yet). Reading and hashing happen outside
the write transaction; the catalog changes of one reconcile are one transaction.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ingest.catalog import (
    FOLDER_NOT_UTF8,
    NAME_NOT_UTF8,
    NOT_UTF8,
    Catalog,
    Document,
    Folder,
    Skipped,
    storable,
)
from ingest.config import IngestConfig
from ingest.folders import is_system
from ingest.ignore import IGNORE_FILE, IgnoreRules, Skip
from ingest.queue import CRASHED, JobQueue

_REASONS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOENT: "the file vanished while it was being read",
    errno.ELOOP: "symbolic link loop",
    errno.EIO: "input/output error (a failing disk or network share?)",
}


def describe(exc: OSError) -> str:
    """A readable reason for a failed file operation, for the document's status line."""
    return _REASONS.get(exc.errno, exc.strerror or str(exc))


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass(frozen=True)
class Found:
    """A document file on disk, or one that is there but cannot be read (`error`), or a file (or an excluded
    folder) that is not a document, and why (`skip`), for the status to list."""

    rel: str
    size: int
    mtime_ns: int
    error: str | None = None
    skip: Skip | None = None


class ScanStopped(Exception):
    """The scan was told to stop (its `stop` event set) while it walked: nothing was changed."""


@dataclass(frozen=True)
class Scanning:
    """How far a scan's walk is: the folder it lists now, the files found so far (documents or not), and
    the documents among them that are new or changed since the catalog saw them (by size and time: they
    are read once the walk is over, unless their bytes show a touch or a move)."""

    folder: Path
    files_found: int
    files_changed: int


@dataclass
class ScanReport:
    new: int = 0
    changed: int = 0
    moved: int = 0
    deleted: int = 0
    failed: int = 0
    missing: list[Path] = field(default_factory=list)  # watched folders not there (an unplugged drive?): kept
    unreadable: list[tuple[Path, str]] = field(default_factory=list)  # subfolders that could not be listed
    held: int = 0  # documents whose file vanished, kept for one more window (`Reconciler.release`)
    links: dict[Path, set[Path]] = field(default_factory=dict)  # links followed: real target -> its links


def probe(rules: IgnoreRules, rel: str, report: ScanReport | None = None) -> Found | None:
    """The document at `rel`, or the file there that is no document (with its `skip`), or None if there is no
    file there or it is hidden. A link to a file is followed: the document is at the link's path, and its
    target is recorded in `report.links` (the watcher watches it there); a link into a system folder
    (`/etc/passwd`, `/proc/self/environ`) is not, as a link to a system folder is not walked."""
    path = rules.root / rel
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP and rules.file_skip(rel, 0, 0) is None:
            return Found(rel, 0, 0, describe(exc))
        return None  # gone, or a dangling link
    target = path.resolve() if path.is_symlink() else None
    if target is not None and is_system(target):
        return None  # before the rules, which read a file without a suffix to tell its type
    if not stat.S_ISREG(st.st_mode) or (skip := rules.file_skip(rel, st.st_size, st.st_mtime_ns)) == "hidden":
        return None
    if report is not None and target is not None:
        report.links.setdefault(target, set()).add(path)  # a file may have several
    name = storable(rel)
    error = NAME_NOT_UTF8 if name != rel and skip is None else None
    return Found(name, st.st_size, st.st_mtime_ns, error, skip)


def walk(
    rules: IgnoreRules,
    under: str,
    report: ScanReport,
    listing: Callable[[Path, list[Found]], None] | None = None,
) -> list[Found]:
    """Every document below `under` (a relative folder, "" for the root). Links are followed: to a file,
    by `probe`; to a folder, when its target is outside the watched folder and apart from every folder
    followed so far (`_followable`), so a link loop, or a link to a folder above, cannot trap the walk.
    `listing(folder, found so far)` hears of each folder before it is listed: a long walk tells how far
    it is (and may end it by raising). A folder whose name is not UTF-8 is not walked: it is found, failed,
    once for all its files."""
    found: list[Found] = []
    stack = [under]
    while stack:
        rel_dir = stack.pop()
        if storable(rel_dir) != rel_dir:
            found.append(Found(storable(rel_dir), 0, 0, FOLDER_NOT_UTF8))
            continue
        if listing is not None:
            listing(rules.root / rel_dir, found)
        try:
            with os.scandir(rules.root / rel_dir) as entries:
                names = [(e.name, _is_dir(e), e.is_symlink()) for e in entries]
        except OSError as exc:
            report.unreadable.append((rules.root / rel_dir, describe(exc)))
            continue
        for name, is_dir, is_link in names:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if is_dir:
                if not rules.skips_dir(rel) and (
                    not is_link or _followable(rules.root, rules.root / rel, report)
                ):
                    stack.append(rel)
                else:
                    found += _ignored_dir(rules, rel)
            elif (doc := probe(rules, rel, report)) is not None:
                found.append(doc)
    return found


def _ignored_dir(rules: IgnoreRules, rel: str) -> list[Found]:
    """A folder an .m3ignore excludes, as one entry for the status to count (its files are not walked);
    none for a hidden or a tool's folder."""
    return [Found(storable(rel), 0, 0, skip="ignored")] if rules.dir_skip(rel) == "ignored" else []


def _leads_to(link: Path, target: Path) -> bool:
    """Whether `link` is still a symbolic link to `target`."""
    try:
        return link.is_symlink() and link.resolve() == target
    except (OSError, RuntimeError):  # RuntimeError: a link loop
        return False


def _is_dir(entry: os.DirEntry) -> bool:
    """Whether the entry is a folder, or a link to one; a link loop is not (`probe` reports it)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _followable(root: Path, link: Path, report: ScanReport) -> bool:
    """Whether to walk a link to a folder: the link was followed before (a watcher batch walks it again), or
    its target is outside the watched folder `root` (inside, it is walked already), neither holds nor lies in
    `root` or a folder followed before, and is none of the system's folders. Followed, it is recorded in
    `report.links`."""
    target = link.resolve()
    if link in report.links.get(target, ()):
        return True
    walled = [root, *(t for t in report.links if os.path.isdir(t))]
    if any(target.is_relative_to(w) or w.is_relative_to(target) for w in walled):
        return False
    if is_system(target):
        return False
    report.links[target] = {link}
    return True


class Reconciler:
    def __init__(self, catalog: Catalog, queue: JobQueue, config: IngestConfig):
        self.catalog = catalog
        self.queue = queue
        self.config = config
        self._rules: dict[int, IgnoreRules] = {}
        self._held: dict[int, float] = {}  # document id -> when its deletion is due (time.monotonic)
        self._links: dict[Path, set[Path]] = {}  # the links followed by the last scan and the batches since

    def rules(self, folder: Folder) -> IgnoreRules:
        if folder.id not in self._rules:
            binaries = {
                rel: (s.size, s.mtime_ns)
                for rel, s in self.catalog.skipped(folder.id).items()
                if s.kind == "unsupported" and not s.suffix
            }
            self._rules[folder.id] = IgnoreRules(folder.path, self.config.max_file_bytes, binaries)
        return self._rules[folder.id]

    def scan(
        self,
        folders: Iterable[Folder] | None = None,
        on_walk: Callable[[Scanning], None] | None = None,
        stop: threading.Event | None = None,
    ) -> ScanReport:
        """Reconcile whole folders (all watched ones by default). `on_walk` hears how far the walk is as each
        folder is listed; `stop`, once set, ends the walk with ScanStopped before anything changed (a scan
        asked for in front takes over)."""
        report = ScanReport()
        items = []
        walking = _Walking(on_walk, stop)
        for folder in self.catalog.folders() if folders is None else folders:
            if not os.path.isdir(folder.path):
                report.missing.append(folder.path)
                continue
            self._rules.pop(folder.id, None)  # re-read every .m3ignore
            scope = self.catalog.documents(folder.id)
            walking.begin(scope)
            found = walk(self.rules(folder), "", report, walking)
            walking(folder.path, found)  # the whole folder's count
            items.append((folder, found, scope, self.catalog.skipped(folder.id)))
        self._reconcile(items, report)
        self._links = report.links
        return report

    def reconcile_paths(
        self, paths: Iterable[Path], moves: Iterable[tuple[Path, Path]] = (), hold_s: float = 0.0
    ) -> ScanReport:
        """Reconcile just the files and folders at `paths`, after following `moves` (src, dst) in order:
        what the watcher saw. A path that is a folder is walked; one that is gone deletes what was there,
        or, with `hold_s`, keeps it that long (`release`): a file of its bytes found meanwhile takes it over
        as a move. Links are followed by the scan's rules, the folders followed so far included: a batch
        inside a followed folder does not walk it again through a link back into it (its files were listed
        twice until the next scan)."""
        report = ScanReport(links=self._followed())
        folders = self.catalog.folders()
        for src, dst in moves:
            report.moved += self._move(folders, src, dst)
        by_folder: dict[int, tuple[Folder, list[str]]] = {}
        for path in paths:
            if (where := _locate(folders, path)) is not None:
                folder, rel = where
                rel = _within_named(rel)
                parent, _, name = rel.rpartition("/")
                if name == IGNORE_FILE:  # new rules for everything below: forget the old ones, walk it all
                    self.rules(folder).forget(parent)
                    rel = parent
                by_folder.setdefault(folder.id, (folder, []))[1].append(rel)
        items = []
        for folder, rels in by_folder.values():
            if not os.path.isdir(folder.path):
                report.missing.append(folder.path)
                continue
            rules = self.rules(folder)
            found: list[Found] = []
            scope: dict[str, Document] = {}
            skipped: dict[str, Skipped] = {}
            for rel in _outermost(rels):
                path = folder.path / rel
                if os.path.isdir(path) and (not path.is_symlink() or _followable(folder.path, path, report)):
                    found += _ignored_dir(rules, rel) if rules.skips_dir(rel) else walk(rules, rel, report)
                elif (doc := probe(rules, rel, report)) is not None:
                    found.append(doc)
                scope.update(self.catalog.documents(folder.id, under=rel))
                skipped.update(self.catalog.skipped(folder.id, under=rel))
            items.append((folder, found, scope, skipped))
        self._reconcile(items, report, hold_s)
        self._links = report.links
        return report

    def _followed(self) -> dict[Path, set[Path]]:
        """The links followed so far that are still links to where they led (one removed or changed since
        frees its target to be followed through another)."""
        links = {
            target: {link for link in paths if _leads_to(link, target)}
            for target, paths in self._links.items()
        }
        return {target: paths for target, paths in links.items() if paths}

    def release(self) -> int:
        """Delete the documents held whose time is up and whose file is still not there (one found again
        or moved meanwhile is simply let go); returns how many were deleted."""
        now = time.monotonic()
        due = [doc_id for doc_id, at in self._held.items() if at <= now]
        if not due:
            return 0
        roots = {f.id: f.path for f in self.catalog.folders()}
        gone = []
        for doc_id in due:
            del self._held[doc_id]
            doc = self.catalog.document(doc_id)
            root = roots.get(doc.folder_id) if doc is not None else None
            if root is not None and os.path.isdir(root) and not os.path.lexists(root / doc.rel_path):
                gone.append(doc_id)
        self.catalog.delete_documents(gone)
        return len(gone)

    def _move(self, folders: list[Folder], src: Path, dst: Path) -> int:
        """Follow a file or folder rename: its documents keep their ids, chunks and memories. What ends
        up wrong (a move onto an ignored name, a file changed on the way) is fixed by the reconcile."""
        here, there = _locate(folders, src), _locate(folders, dst)
        if here is None or there is None or storable(str(src)) != str(src) or storable(str(dst)) != str(dst):
            return 0  # into or out of the watched folders, or a name the catalog cannot hold: the reconcile
        (src_folder, src_rel), (dst_folder, dst_rel) = here, there
        docs = self.catalog.documents(src_folder.id, under=src_rel)
        with self.catalog.atomic():
            for rel, doc in docs.items():
                new_rel = dst_rel + rel[len(src_rel) :]
                replaced = self.catalog.documents(dst_folder.id, under=new_rel).get(new_rel)
                if replaced is not None:
                    self.catalog.delete_documents([replaced.id])
                self.catalog.update_document(doc.id, folder_id=dst_folder.id, rel_path=new_rel)
        return len(docs)

    def _reconcile(
        self,
        items: list[tuple[Folder, list[Found], dict[str, Document], dict[str, Skipped]]],
        report: ScanReport,
        hold_s: float = 0.0,
    ) -> None:
        """Apply what the disk says (`found`) to the documents, and the files that are none (`skipped`),
        that were in the same place (`scope`); what vanished is deleted, or held `hold_s`."""
        new: list[tuple[Folder, Found]] = []
        changed: list[tuple[Folder, Document, Found]] = []
        vanished: dict[int, Document] = {}
        skips: list[tuple[Folder, dict[str, Skipped], dict[str, Skipped]]] = []  # (folder, now, before)
        for folder, found, scope, skipped in items:
            now = {f.rel: self._skipped(f, f.skip) for f in found if f.skip}
            skips.append((folder, now, skipped))
            found = _one_per_name([f for f in found if not f.skip])
            on_disk = {f.rel for f in found}
            vanished.update((doc.id, doc) for rel, doc in scope.items() if rel not in on_disk)
            for f in found:
                doc = scope.get(f.rel)
                if doc is None:
                    new.append((folder, f))
                elif _differs(doc, f):
                    changed.append((folder, doc, f))
        # Hash outside the transaction; a new file only when it may be a vanished document moved there, or
        # one whose file is gone from elsewhere (its folder renamed, its deletion held or not seen yet).
        gone = self._lost({f.size for _, f in new}) if new else []
        moved_from = {(d.size, d.sha256): d for d in [*gone, *vanished.values()] if d.sha256}
        sizes = {size for size, _ in moved_from}
        new_read = [_read(folder, f) if f.size in sizes else (f, None) for folder, f in new]
        changed_read = [_read(folder, f) for folder, _, f in changed]
        with self.catalog.atomic():
            for (folder, _), (f, sha) in zip(new, new_read, strict=True):
                if f is None:
                    continue  # gone before it could be read
                if (doc := moved_from.pop((f.size, sha), None)) is not None:
                    vanished.pop(doc.id, None)
                    self.catalog.update_document(
                        doc.id, folder_id=folder.id, rel_path=f.rel, mtime_ns=f.mtime_ns
                    )
                    report.moved += 1
                    continue
                doc_id = self.catalog.insert_document(
                    folder.id, f.rel, f.size, f.mtime_ns, sha, "failed" if f.error else "pending", f.error
                )
                report.new += 1
                if f.error:
                    report.failed += 1
                else:
                    self.queue.enqueue(doc_id)
            for (_, doc, _), (f, sha) in zip(changed, changed_read, strict=True):
                if f is None:
                    vanished[doc.id] = doc
                elif f.error:
                    self.catalog.replace_chunks(doc.id, [])
                    self.catalog.update_document(doc.id, status="failed", error=f.error)
                    report.failed += 1
                elif sha == doc.sha256 and (doc.status != "failed" or doc.error == CRASHED):
                    self.catalog.update_document(doc.id, size=f.size, mtime_ns=f.mtime_ns)  # touched only
                else:  # new content, or a failed document touched: parse it (again)
                    self.catalog.update_document(
                        doc.id, size=f.size, mtime_ns=f.mtime_ns, sha256=sha, status="pending", error=None
                    )
                    self.queue.enqueue(doc.id)
                    report.changed += 1
            if hold_s:
                due = time.monotonic() + hold_s
                for doc_id in vanished:
                    self._held.setdefault(doc_id, due)
                report.held += len(vanished)
            else:
                self.catalog.delete_documents(vanished)
                report.deleted += len(vanished)
            for folder, now, before in skips:
                self.catalog.forget_skipped(folder.id, [rel for rel in before if rel not in now])
                self.catalog.record_skipped(folder.id, [s for rel, s in now.items() if before.get(rel) != s])

    def _skipped(self, f: Found, kind: Skip) -> Skipped:
        """The catalog's record of a file that is not a document, with the reason the status gives."""
        suffix = PurePosixPath(f.rel).suffix.lower()
        if kind == "too_large":
            reason = f"{f.size / 2**20:,.1f} MB, over the {self.config.max_file_mb:g} MB limit (max_file_mb)"
        elif kind == "unsupported":
            reason = f"memory3 does not read {suffix} files" if suffix else "no suffix, and not text"
        else:
            reason = f"left out by {IGNORE_FILE}"
        return Skipped(f.rel, kind, suffix, f.size, f.mtime_ns, reason)

    def _lost(self, sizes: set[int]) -> list[Document]:
        """The documents of these sizes whose file is not on the disk: their watched folder renamed or
        unplugged (kept for this), their deletion held, or their file moved where the watcher has not told
        of it yet. A new file with one's bytes takes it over as a move (its chunks and memories kept)."""
        return [doc for doc, path in self.catalog.documents_of_size(sizes) if not os.path.lexists(path)]


class _Walking:
    """A scan's walk as it goes: counts what each folder listed added, tells `on_walk`, and ends the walk
    (ScanStopped) once `stop` is set."""

    def __init__(self, on_walk: Callable[[Scanning], None] | None, stop: threading.Event | None):
        self.on_walk, self.stop = on_walk, stop
        self.found = self.changed = 0
        self._scope: dict[str, Document] = {}
        self._upto = 0  # how much of the found list is counted

    def begin(self, scope: dict[str, Document]) -> None:
        """The walk of a watched folder starts; `scope`: its documents, as the catalog has them."""
        self._scope, self._upto = scope, 0

    def __call__(self, folder: Path, found: list[Found]) -> None:
        if self.stop is not None and self.stop.is_set():
            raise ScanStopped
        for f in found[self._upto :]:
            doc = self._scope.get(f.rel)
            self.found += 1
            self.changed += not f.skip and (doc is None or _differs(doc, f))
        self._upto = len(found)
        if self.on_walk is not None:
            self.on_walk(Scanning(folder, self.found, self.changed))


def _one_per_name(found: list[Found]) -> list[Found]:
    """One file per catalog name: a name that is not UTF-8, written with `\\xNN` escapes, can equal a
    real file's name that holds those very characters; the real one is kept (the other fails anyway)."""
    by_name: dict[str, Found] = {}
    for f in found:
        if f.rel not in by_name or by_name[f.rel].error in NOT_UTF8:
            by_name[f.rel] = f
    return list(by_name.values())


def _differs(doc: Document, f: Found) -> bool:
    if f.error:
        return doc.status != "failed" or doc.error != f.error
    return (doc.size, doc.mtime_ns) != (f.size, f.mtime_ns)


def _read(folder: Folder, f: Found) -> tuple[Found | None, str | None]:
    """Hash a file: (f, sha256); (f with a reason, None) if it cannot be read; (None, None) if it is gone."""
    if f.error:
        return f, None
    try:
        return f, sha256_file(folder.path / f.rel)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return Found(f.rel, f.size, f.mtime_ns, describe(exc)), None


def _locate(folders: list[Folder], path: Path) -> tuple[Folder, str] | None:
    """The watched folder holding `path`, and the path relative to it ("" for the folder itself)."""
    for folder in folders:
        if path == folder.path:
            return folder, ""
        if path.is_relative_to(folder.path):
            return folder, path.relative_to(folder.path).as_posix()
    return None


def _within_named(rel: str) -> str:
    """`rel`, or the folder above it whose name is not UTF-8: what happens inside such a folder is its own,
    single failure (`walk`)."""
    parts = rel.split("/")
    bad = next((i for i, part in enumerate(parts[:-1]) if storable(part) != part), None)
    return rel if bad is None else "/".join(parts[: bad + 1])


def _outermost(rels: list[str]) -> list[str]:
    """Drop paths inside another of the paths: reconciling a folder covers everything below it. Sorting by
    parts puts every path right after its ancestors, so comparing with the last kept path is enough."""
    kept: list[str] = []
    for rel in sorted(set(rels), key=lambda r: r.split("/")):
        if not kept or not (kept[-1] == "" or rel.startswith(kept[-1] + "/")):
            kept.append(rel)
    return kept
