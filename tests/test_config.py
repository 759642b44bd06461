"""config.toml's [ingest] table: defaults, overrides, and readable refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.config import IngestConfig
from ingest.errors import ConfigError


def test_no_file_means_defaults(tmp_path: Path):
    config = IngestConfig.load(tmp_path / "config.toml")
    assert config == IngestConfig()
    assert config.max_file_bytes == 50 * 1024 * 1024


def test_settings_are_read_from_the_ingest_table(tmp_path: Path):
    (tmp_path / "config.toml").write_text("[ingest]\nmax_file_mb = 2.5\nquiet_s = 1\n\n[model]\npath = 'x'\n")
    config = IngestConfig.load(tmp_path / "config.toml")
    assert (config.max_file_mb, config.quiet_s, config.max_chunk_tokens) == (2.5, 1, 128)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[ingest]\nmax_file_mb = 'big'\n", "max_file_mb must be a positive number"),
        ("[ingest]\nmax_chunk_tokens = 1.5\n", "max_chunk_tokens must be a positive number"),
        ("[ingest]\nquiet_s = -1\n", "quiet_s must be a positive number"),
        ("[ingest]\nmax_file_gb = 1\n", "no setting 'max_file_gb'"),
        ("[ingest\n", "cannot be read"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(tmp_path: Path, text: str, message: str):
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        IngestConfig.load(tmp_path / "config.toml")
