"""The clients stay light: importing the `m3` command, the app or the service client loads no model runtime
(torch, llama.cpp, ONNX Runtime) and not even numpy, so a command starts in a blink and leaves the model
to the one process that keeps it loaded."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import assistant

HEAVY = ("torch", "llama_cpp", "onnxruntime", "numpy")

CLIENTS = sorted(
    [m.name for m in pkgutil.walk_packages(assistant.__path__, "assistant.")]
    + ["assistant", "engine.service.client"]
)

# Imports each module in turn and names the first one that brought each heavy package in.
PROBE = """
import importlib, json, sys
heavy, found = {heavy!r}, {{}}
for name in {modules!r}:
    importlib.import_module(name)
    for h in heavy:
        if h in sys.modules and h not in found:
            found[h] = name
print(json.dumps(found))
"""


def test_clients_import_no_model_runtime():
    assert "assistant.cli" in CLIENTS
    code = PROBE.format(heavy=HEAVY, modules=CLIENTS)
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {}, f"heavy package: the first module importing it: {result.stdout}"
