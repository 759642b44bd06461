"""Shared fixtures: a private M3_HOME, the bundled model loaded once, and llama.cpp as the oracle."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from engine.threads import compute_threads

os.environ["HF_HUB_OFFLINE"] = "1"
# The thread rule the engine service follows (engine/threads.py): two test processes on two cores, each
# computing on both, wait at every operation for a thread the other has descheduled (the QA bench's test
# took 629 s so where it takes 181 s alone).
torch.set_num_threads(compute_threads())


@pytest.fixture(scope="session", autouse=True)
def m3_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("m3home")
    os.environ["M3_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def home(m3_home: Path):
    """The same private home as a value, for code that takes one (engines, benchmarks, the cache)."""
    from ingest.paths import Home

    return Home.at(m3_home)


@pytest.fixture(scope="session")
def model_path(home) -> Path:
    from engine.models.runtime import default_model_path

    return default_model_path(home.cache)


@pytest.fixture(scope="session")
def embedder_cache(home) -> Path:
    """Where the embedder's ONNX graph is exported once for the whole run."""
    return home.cache / "embedder"


@pytest.fixture(scope="session")
def rt32(model_path: Path):
    """The default model in float32 on the CPU: for comparisons that need float tolerance."""
    from engine.models.runtime import Runtime

    return Runtime.load(model_path, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="session")
def rt(model_path: Path):
    """The default model as users run it (bfloat16, CUDA when present)."""
    from engine.models.runtime import Runtime

    return Runtime.load(model_path)


@pytest.fixture(scope="session")
def oracle(model_path: Path):
    from bench.llamacpp import LlamaCpp

    return LlamaCpp(model_path, n_ctx=1024)


@pytest.fixture
def catalog(tmp_path: Path):
    """A fresh catalog file of its own (not under M3_HOME), closed after the test."""
    from ingest.catalog import Catalog

    cat = Catalog(tmp_path / "catalog.db")
    yield cat
    cat.close()


@pytest.fixture(scope="session")
def count_tokens(model_path: Path):
    """Model tokens of a text, without BOS: what a chunk's budget is measured in."""
    from engine.models.tokenizer import Tokenizer

    tok = Tokenizer(model_path)
    return lambda s: len(tok.encode(s))


@pytest.fixture(scope="module")
def roots(home):
    """Make homes of their own under /tmp (service_rig.new_root), removed after the module."""
    from service_rig import new_root

    made: list[Path] = []

    def make(config: str = "") -> Path:
        made.append(new_root(home.cache, config))
        return made[-1]

    yield make
    for root in made:
        shutil.rmtree(root, ignore_errors=True)
