"""A running engine service for tests: a home of its own under /tmp sharing the session's cache, the
service process started and stopped there, and a corpus of notes to serve."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from ingest.paths import Home

START_S = 120.0  # a cold start on a busy 2-core machine


def corpus(folder: Path, files: int = 24) -> Path:
    """Notes of a few chunks each (the tiny model's tokenizer spells most text byte by byte), their text
    told apart by the folder's name (the same text would be the same memory)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        lines = [f"# Note {i} of {folder.name}", ""]
        lines += [
            f"Door {i}, line {j}: it opens with code {1000 + 37 * i + j}; its key hangs on hook {j}."
            for j in range(6)
        ]
        (folder / f"note-{i:02d}.md").write_text("\n".join(lines) + "\n")
    return folder


class Running:
    """One service process over the home at `root`, and a client of its socket."""

    def __init__(self, root: Path, *args: str):
        self.root = root
        self.home = Home.at(root)
        self.socket = self.home.data / "m3.sock"
        self.stderr = root / f"stderr-{time.monotonic_ns()}.txt"
        env = {**os.environ, "M3_HOME": str(root), "HF_HUB_OFFLINE": "1"}
        with open(self.stderr, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "engine.service", *args],
                env=env,
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self.http = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://m3", timeout=60
        )
        self.states: list[str] = []  # distinct health states seen while starting
        self.port: int | None = None  # TCP, when configured
        self.early: httpx.Response | None = None  # a /v1/status asked while loading

    def wait_ready(self) -> Running:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the service exited: {self.stderr.read_text()}"
            try:
                state = self.http.get("/v1/health").json()["state"]
            except httpx.TransportError:
                time.sleep(0.01)
                continue
            if not self.states or self.states[-1] != state:
                self.states.append(state)
            if state == "loading" and self.early is None:
                self.early = self.http.get("/v1/status")
            if state == "ready":
                return self
            assert state == "loading", self.home.log_file.read_text()[-3000:]
            time.sleep(0.01)
        raise AssertionError("the service was not ready in time")

    def events(self, url: str, body: dict) -> Iterator[dict]:
        with self.http.stream("POST", url, json=body, timeout=httpx.Timeout(120, connect=5)) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"] == "application/x-ndjson"
            for line in response.iter_lines():
                yield json.loads(line)

    def ask(self, question: str, mode: str = "memory") -> list[dict]:
        return list(self.events("/v1/answers", {"question": question, "mode": mode}))

    def scan(self) -> list[dict]:
        return list(self.events("/v1/scan", {"path": None}))

    def status(self) -> dict:
        response = self.http.get("/v1/status")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_exit(self, timeout_s: float = 60) -> int:
        rc = self.process.wait(timeout_s)
        self.http.close()
        return rc

    def kill(self) -> None:
        self.process.kill()
        self.wait_exit()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.http.close()


def new_root(cache: Path, config: str = "") -> Path:
    """A home under /tmp whose folders others may traverse (so that only the socket's own mode keeps
    another user out), sharing `cache`."""
    root = Path(tempfile.mkdtemp(prefix="m3svc-", dir="/tmp"))
    root.chmod(0o755)
    cache.mkdir(parents=True, exist_ok=True)
    (root / "cache").symlink_to(cache)
    if config:
        (root / "config").mkdir()
        (root / "config" / "config.toml").write_text(config)
    return root


def wait_for(done, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@contextmanager
def serving(root: Path, model: Path, docs: Path) -> Iterator[Running]:
    """The service of `root` on `model` (CPU), `docs` watched and scanned; stopped after."""
    running = Running(root, "--model", str(model), "--device", "cpu")
    try:
        running.wait_ready()
        assert running.http.post("/v1/folders", json={"path": str(docs)}).status_code == 201
        running.scan()
        yield running
    finally:
        running.stop()
