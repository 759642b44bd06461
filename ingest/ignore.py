"""Which files of a watched folder are documents: not hidden, not tool state, not editor leftovers, not
binaries, not too large, and not excluded by a `.m3ignore` (gitignore syntax, in any subfolder).

A file that is not a document says why (`Skip`): the status lists what a search will not find, except
what is hidden or a tool's (never a person's document) and is not worth a line.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Literal

import pathspec

from ingest.parsers import is_supported

IGNORE_FILE = ".m3ignore"

# Why a file is not a document. "hidden": hidden, an editor's leftover, or in a tool's or an excluded
# folder (never listed); "ignored": an .m3ignore excludes it (the user's choice); "unsupported": no parser
# reads its type (a suffixless file: its first bytes are not text); "too_large": over max_file_mb.
Skip = Literal["hidden", "ignored", "unsupported", "too_large"]

# Folders that hold tools' state, not a person's documents (hidden ones such as .git are skipped anyway).
SKIPPED_DIRS = frozenset({"node_modules", "__pycache__", "venv", "site-packages", "bower_components"})

# Editor and office leftovers: backups, swap and lock files, partial downloads; "4913" is vim's probe file.
TEMP_PATTERNS = (
    "*~",
    "#*#",
    "~$*",
    "*.swp",
    "*.swo",
    "*.swx",
    "*.tmp",
    "*.temp",
    "*.part",
    "*.crdownload",
    "*.lock",
    "4913",
)


def _split(rel: str) -> tuple[str, str]:
    parent, _, name = rel.rpartition("/")
    return parent, name


class IgnoreRules:
    """The rules for one watched folder. Paths are POSIX paths relative to its root. `.m3ignore` files are
    read when first needed and cached; call `forget` when one changes."""

    def __init__(self, root: Path, max_file_bytes: int, binaries: dict[str, tuple[int, int]] | None = None):
        """`binaries`: suffixless files known not to be text, by path, with the (size, mtime_ns) they had
        then: unchanged, they are not read again to tell."""
        self.root = root
        self.max_file_bytes = max_file_bytes
        self.binaries = binaries or {}
        self._specs: dict[str, pathspec.GitIgnoreSpec | None] = {}
        self._skipped_dirs: dict[str, Skip | None] = {}

    def forget(self, rel_dir: str) -> None:
        """Drop what was read from `rel_dir/.m3ignore` and every decision that depended on it."""
        self._specs.pop(rel_dir, None)
        self._skipped_dirs.clear()

    def skips_dir(self, rel: str) -> bool:
        return self.dir_skip(rel) is not None

    def dir_skip(self, rel: str) -> Skip | None:
        """Why the folder is not walked ("hidden" or "ignored"), None if it is."""
        if not rel:
            return None
        if rel not in self._skipped_dirs:
            parent, name = _split(rel)
            hidden = name.startswith(".") or name in SKIPPED_DIRS or name.endswith(".egg-info")
            self._skipped_dirs[rel] = (
                "hidden"
                if hidden or self.skips_dir(parent)
                else "ignored"
                if self._excluded(rel, is_dir=True)
                else None
            )
        return self._skipped_dirs[rel]

    def file_skip(self, rel: str, size: int, mtime_ns: int) -> Skip | None:
        """Why the file is not a document, None if it is one. Its type is asked after the rules, since a
        suffixless file is read to tell (unless `binaries` knows it unchanged); its size last, so a large
        photo is listed as a type memory3 does not read rather than as too large."""
        parent, name = _split(rel)
        if name.startswith(".") or any(fnmatch.fnmatchcase(name, p) for p in TEMP_PATTERNS):
            return "hidden"
        if self.skips_dir(parent):
            return "hidden"  # inside a folder listed (an excluded one) or not worth listing
        if self._excluded(rel, is_dir=False):
            return "ignored"
        known_binary = not Path(name).suffix and self.binaries.get(rel) == (size, mtime_ns)
        if known_binary or not is_supported(self.root / rel):
            return "unsupported"
        return "too_large" if size > self.max_file_bytes else None

    def _excluded(self, rel: str, is_dir: bool) -> bool:
        """gitignore semantics: the deepest .m3ignore with a matching pattern decides, its last match wins."""
        parts = rel.split("/")
        for depth in range(len(parts) - 1, -1, -1):
            spec = self._spec("/".join(parts[:depth]))
            if spec is not None:
                include = spec.check_file("/".join(parts[depth:]) + ("/" if is_dir else "")).include
                if include is not None:
                    return include
        return False

    def _spec(self, rel_dir: str) -> pathspec.GitIgnoreSpec | None:
        if rel_dir not in self._specs:
            try:
                lines = (self.root / rel_dir / IGNORE_FILE).read_text(errors="replace").splitlines()
            except OSError:
                lines = None  # no file (the usual case), or unreadable: no extra rules
            self._specs[rel_dir] = pathspec.GitIgnoreSpec.from_lines(lines) if lines else None
        return self._specs[rel_dir]
