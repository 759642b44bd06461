"""Adding and removing watched folders, with the checks that keep every file in at most one of them.
(The list is `Catalog.folders()`.)"""

from __future__ import annotations

import os
from pathlib import Path

from ingest.catalog import Catalog, Folder, storable
from ingest.errors import FolderError

# The system's folders, not a person's documents: kernel file systems (files that are processes, devices
# and settings, endless or changing as they are read), the system's settings (/etc, on macOS /private/etc:
# passwords, keys) and its boot and run-time state.
SYSTEM = tuple(Path(p) for p in ("/proc", "/sys", "/dev", "/etc", "/private/etc", "/boot", "/run"))


def is_system(resolved: Path) -> bool:
    """Whether a path (links resolved) is the file system's root or lies in one of the SYSTEM folders: never
    watched, and never followed from a watched folder by a link, to a folder or to a file."""
    return resolved == Path(resolved.anchor) or any(resolved.is_relative_to(s) for s in SYSTEM)


def candidates(path: str | Path) -> set[Path]:
    """The absolute forms a watched folder may be named by (as given, links followed). FolderError for a
    name no file system holds (a NUL character) or a symlink loop."""
    if "\0" in str(path):
        raise FolderError("A folder's path cannot hold a NUL character.")
    given = Path(path).expanduser()
    try:
        return {given.absolute(), given.resolve()}
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise FolderError(f"{given} cannot be followed to a folder ({exc}).") from None


def add_folder(catalog: Catalog, path: str | Path) -> Folder:
    """Watch a folder. Refuses what would make a file belong to two watched folders."""
    candidates(path)
    given = Path(path).expanduser()
    if not given.exists():
        raise FolderError(f"{given} does not exist.")
    if not given.is_dir():
        raise FolderError(f"{given} is not a folder.")
    if not os.access(given, os.R_OK | os.X_OK):
        raise FolderError(f"{given} cannot be read (permission denied).")
    resolved = given.resolve()
    if storable(str(resolved)) != str(resolved):
        raise FolderError(
            f"{storable(str(resolved))}: the name is not valid UTF-8, so it cannot be recorded; rename it."
        )
    if is_system(resolved):
        raise FolderError(f"{resolved} holds the system's files, not documents; choose a folder of your own.")
    for folder in catalog.folders():
        if folder.path == resolved:
            raise FolderError(f"{resolved} is already watched.")
        if resolved.is_relative_to(folder.path):
            raise FolderError(f"{resolved} is inside {folder.path}, which is already watched.")
        if folder.path.is_relative_to(resolved):
            raise FolderError(
                f"{resolved} contains {folder.path}, which is already watched; remove that one first."
            )
    return catalog.add_folder(resolved)


def remove_folder(catalog: Catalog, path: str | Path) -> Folder:
    """Stop watching a folder (which may no longer exist) and forget its documents; their memories are
    queued for dropping unless another document has the same text."""
    given = Path(path).expanduser()
    names = candidates(path)
    for folder in catalog.folders():
        if folder.path in names:
            catalog.remove_folder(folder.id)
            return folder
    raise FolderError(f"{given} is not a watched folder.")
