"""The `[engine]` table a benchmark writes for `--profile` and `--reader`: whatever a path holds (quotes,
backslashes, control characters, characters past U+FFFF), config.toml reads it back as it was given."""

from __future__ import annotations

import tomllib

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.engine_settings import write_settings
from engine.config import EngineConfig
from ingest.paths import Home

# what a file name can hold once it is valid UTF-8: any character but NUL, "/" and lone surrogates
NAME = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/"), min_size=1)


@settings(max_examples=200, deadline=None)
@given(NAME)
def test_a_reader_path_reads_back_as_written(tmp_path_factory, name):
    home = Home.at(tmp_path_factory.mktemp("home"))
    reader = f"/readers/{name}.safetensors"
    write_settings(home, {"profile": "dense", "reader": reader})
    with home.config_file.open("rb") as f:
        assert tomllib.load(f) == {"engine": {"profile": "dense", "reader": reader}}
    config = EngineConfig.load(home.config_file)
    assert (config.profile, config.reader) == ("dense", reader)


def test_an_emoji_in_a_reader_path(tmp_path):
    """json.dumps wrote it as a surrogate pair, which TOML refuses: the run stopped after loading."""
    home = Home.at(tmp_path)
    write_settings(home, {"reader": "/r/emoji😀.safetensors"})
    assert EngineConfig.load(home.config_file).reader == "/r/emoji😀.safetensors"


def test_no_settings_write_no_config(tmp_path):
    home = Home.at(tmp_path)
    write_settings(home, {})
    assert not home.config_file.exists()
