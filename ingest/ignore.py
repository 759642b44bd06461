"""Which files of a watched folder are documents: not hidden, not tool state, not editor leftovers, not
binaries, not too large, and not excluded by a `.m3ignore` (gitignore syntax, in any subfolder)."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pathspec

from ingest.parsers import is_supported

IGNORE_FILE = ".m3ignore"

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

    def __init__(self, root: Path, max_file_bytes: int):
        self.root = root
        self.max_file_bytes = max_file_bytes
        self._specs: dict[str, pathspec.GitIgnoreSpec | None] = {}
        self._skipped_dirs: dict[str, bool] = {}

    def forget(self, rel_dir: str) -> None:
        """Drop what was read from `rel_dir/.m3ignore` and every decision that depended on it."""
        self._specs.pop(rel_dir, None)
        self._skipped_dirs.clear()

    def skips_dir(self, rel: str) -> bool:
        if not rel:
            return False
        if rel not in self._skipped_dirs:
            parent, name = _split(rel)
            self._skipped_dirs[rel] = (
                name.startswith(".")
                or name in SKIPPED_DIRS
                or name.endswith(".egg-info")
                or self.skips_dir(parent)
                or self._excluded(rel, is_dir=True)
            )
        return self._skipped_dirs[rel]

    def accepts_file(self, rel: str, size: int) -> bool:
        """Whether the file is a document. Asked last, what kind it is may read it (one without a suffix)."""
        parent, name = _split(rel)
        return not (
            name.startswith(".")
            or any(fnmatch.fnmatchcase(name, p) for p in TEMP_PATTERNS)
            or size > self.max_file_bytes
            or self.skips_dir(parent)
            or self._excluded(rel, is_dir=False)
            or not is_supported(self.root / rel)
        )

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
