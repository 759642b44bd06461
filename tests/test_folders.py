"""Adding and removing watched folders: the checks, and what removal leaves behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.catalog import Catalog
from ingest.errors import FolderError
from ingest.folders import add_folder, remove_folder


def test_a_folder_is_stored_resolved(catalog: Catalog, tmp_path: Path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    folder = add_folder(catalog, tmp_path / "link" / ".." / "link")
    assert folder.path == (tmp_path / "real").resolve()
    assert catalog.folders() == [folder]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: (p / "file.txt").write_text("x") and p / "file.txt", "is not a folder"),
    ],
)
def test_what_is_not_a_folder_is_refused(catalog: Catalog, tmp_path: Path, make, message: str):
    with pytest.raises(FolderError, match=message):
        add_folder(catalog, make(tmp_path))


def test_duplicates_and_nested_folders_are_refused(catalog: Catalog, tmp_path: Path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    add_folder(catalog, tmp_path / "a")
    with pytest.raises(FolderError, match="already watched"):
        add_folder(catalog, tmp_path / "a")
    with pytest.raises(FolderError, match="is inside"):
        add_folder(catalog, tmp_path / "a" / "b")
    with pytest.raises(FolderError, match="contains"):
        add_folder(catalog, tmp_path)
    assert len(catalog.folders()) == 1


def test_a_folder_that_vanished_can_still_be_removed(catalog: Catalog, tmp_path: Path):
    (tmp_path / "gone").mkdir()
    add_folder(catalog, tmp_path / "gone")
    (tmp_path / "gone").rmdir()
    assert remove_folder(catalog, tmp_path / "gone").path == tmp_path / "gone"
    assert catalog.folders() == []
    with pytest.raises(FolderError, match="not a watched folder"):
        remove_folder(catalog, tmp_path / "gone")


@pytest.mark.parametrize("path", ["/", "/proc", "/proc/self", "/sys", "/dev", "/dev/shm"])
def test_the_system_s_own_file_systems_are_refused(catalog: Catalog, path: str):
    if not Path(path).is_dir():
        pytest.skip(f"{path} is no folder here")
    with pytest.raises(FolderError, match="holds the system's files, not documents"):
        add_folder(catalog, path)
    assert catalog.folders() == []


def test_a_link_into_the_system_s_files_is_refused_too(catalog: Catalog, tmp_path: Path):
    (tmp_path / "proc").symlink_to("/proc")
    with pytest.raises(FolderError, match="/proc holds the system's files"):
        add_folder(catalog, tmp_path / "proc")
