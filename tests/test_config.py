"""config.toml's [ingest] table: defaults, overrides, and readable refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.actions import ACTIONS
from assistant.settings import Settings
from engine.config import EngineConfig, ServiceConfig
from engine.facade import Engine
from ingest.config import IngestConfig
from ingest.errors import ConfigError
from ingest.paths import Home


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


def test_the_readme_example_config_loads(tmp_path: Path):
    """The settings block README.md shows is what a user copies first: every section of it must load."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "config.toml").write_text(example)
    assert ServiceConfig.load(tmp_path / "config.toml") == ServiceConfig()
    assert EngineConfig.load(tmp_path / "config.toml") == EngineConfig()
    assert IngestConfig.load(tmp_path / "config.toml") == IngestConfig()
    assert Settings.load(tmp_path / "config.toml") == Settings("textual-dark", {})


def test_the_readme_lists_every_key_of_the_app():
    """README's key table is the user's reference: every action, with its default keys."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for action in ACTIONS:
        assert f"| `{action.keys}` | `{action.id}` | {action.help} |" in readme, action.id


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[service]\nidle_minutes = nan\n", "idle_minutes must be a positive number"),
        ("[service]\nidle_minutes = 0\n", "idle_minutes must be a positive number"),
        ("[service]\nidle_minutes = inf\n", "idle_minutes must be a positive number"),
        ("[service]\ntcp_port = -1\n", "tcp_port must be a number, 0 or more"),
        ("[service]\ntcp_port = true\n", "tcp_port must be a number, 0 or more"),
    ],
)
def test_service_settings_are_checked(tmp_path: Path, text: str, message: str):
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        ServiceConfig.load(tmp_path / "config.toml")


def test_a_text_setting_takes_only_a_string(tmp_path: Path):
    (tmp_path / "config.toml").write_text("[engine]\ndecode_weights = 'int4'\n")
    assert EngineConfig.load(tmp_path / "config.toml").decode_weights == "int4"
    for wrong in ("4", "false", "['int4']"):
        (tmp_path / "config.toml").write_text(f"[engine]\ndecode_weights = {wrong}\n")
        with pytest.raises(ConfigError, match="decode_weights must be a string"):
            EngineConfig.load(tmp_path / "config.toml")


def test_a_switch_takes_only_true_or_false(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text("[engine]\nreread = false\n")
    assert EngineConfig.load(config).reread is False and EngineConfig().reread is True
    for wrong in ("0", "1", "'false'", "'no'"):
        config.write_text(f"[engine]\nreread = {wrong}\n")
        with pytest.raises(ConfigError, match="reread must be true or false"):
            EngineConfig.load(config)


def test_unknown_decode_weights_are_refused_before_loading(tmp_path: Path):
    (tmp_path / "config" / "config.toml").parent.mkdir()
    home = Home.at(tmp_path)
    home.config_file.write_text("[engine]\ndecode_weights = 'int2'\n")
    with pytest.raises(ConfigError, match="decode_weights 'int2' is not one of int4, int8, bf16"):
        Engine.open(home)


def test_the_reader_setting_is_normalised_where_it_is_read(tmp_path: Path):
    """Names in any case; a reader file's path with `~` expanded and, when relative, taken from the folder
    of config.toml (not from wherever the service happens to run); an empty one is a clear error."""
    config = tmp_path / "config.toml"
    for value, expected in (
        ("Trained", "trained"),
        (" BASE ", "base"),
        ("readers/r.safetensors", str(tmp_path / "readers" / "r.safetensors")),
        ("~/r.safetensors", str(Path.home() / "r.safetensors")),
        ("/srv/r.safetensors", "/srv/r.safetensors"),
    ):
        config.write_text(f"[engine]\nreader = '{value}'\n")
        assert EngineConfig.load(config).reader == expected
    config.write_text("[engine]\nreader = ''\n")
    with pytest.raises(ConfigError, match="reader must be trained, base or a reader file's path"):
        EngineConfig.load(config)
