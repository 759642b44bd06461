"""Adding and removing watched folders, with the checks that keep every file in at most one of them.
(The list is `Catalog.folders()`.)"""

from __future__ import annotations

import os
from pathlib import Path

from ingest.catalog import Catalog, Folder
from ingest.errors import FolderError


def add_folder(catalog: Catalog, path: str | Path) -> Folder:
    """Watch a folder. Refuses what would make a file belong to two watched folders."""
    given = Path(path).expanduser()
    if not given.exists():
        raise FolderError(f"{given} does not exist.")
    if not given.is_dir():
        raise FolderError(f"{given} is not a folder.")
    if not os.access(given, os.R_OK | os.X_OK):
        raise FolderError(f"{given} cannot be read (permission denied).")
    resolved = given.resolve()
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
    candidates = {given.absolute(), given.resolve()}
    for folder in catalog.folders():
        if folder.path in candidates:
            catalog.remove_folder(folder.id)
            return folder
    raise FolderError(f"{given} is not a watched folder.")
