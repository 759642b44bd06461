"""The `m3` command as a user runs it: a real process, real files, one sentence on bad input, and the
engine service it starts, reuses, restarts and stops.

Every test has a home of its own; whatever service a test started is stopped afterwards (or killed), so
no process outlives the tests. A tiny random-weight model stands in where the answer's content does not
matter: it loads in a blink, so a test pays for starting a process, not for a model.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.tiny_gguf import write_tiny_gguf

M3 = Path(sys.executable).with_name("m3")
TIMEOUT_S = 600


def m3(*args: str | bytes, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(M3), *args], capture_output=True, text=True, timeout=TIMEOUT_S, env=environment(home)
    )


def environment(home: Path) -> dict[str, str]:
    env = {**os.environ, "M3_HOME": str(home)}
    env.pop("M3_MODEL", None)
    return env


def ctrl_c_on() -> None:
    """A child's SIGINT as a terminal leaves it (`preexec_fn`): tests run in the background of a shell
    without job control (`make test &`) inherit SIGINT ignored, and so would the child, which Python then
    leaves ignored: a Ctrl-C test would see the command run to its end."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def assert_one_sentence_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def service_pid(home: Path) -> int:
    return json.loads((home / "data" / "service.json").read_text())["pid"]


def alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie (exited, not yet reaped by whoever adopted it) does not."""
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def wait_gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not alive(pid)


@pytest.fixture(autouse=True)
def no_service_outlives_its_test(tmp_path: Path):
    """After each test: `m3 stop` every home under tmp_path that has a service, and kill what remains."""
    yield
    for record in tmp_path.glob("**/data/service.json"):
        home = record.parent.parent
        try:
            pid = service_pid(home)
        except (OSError, ValueError):
            continue
        if alive(pid):
            m3("stop", home=home)
        if not wait_gone(pid, timeout=10):
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid)


@pytest.fixture
def new_home(tmp_path: Path, home) -> Callable[[str], Path]:
    """A fresh home under tmp_path; all share the session's cache (the embedder is exported once, as for
    one user), each has its own data folder and so its own service."""

    def make(name: str = "home") -> Path:
        root = tmp_path / name
        root.mkdir()
        home.cache.mkdir(parents=True, exist_ok=True)
        (root / "cache").symlink_to(home.cache, target_is_directory=True)
        return root

    return make


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Gemma 3 of six tiny layers: a service with it is ready in a second or two."""
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf", "gemma3")


# --- the model on the command line ----------------------------------------------------------------------


def test_generate_continues_a_prompt(tmp_path, new_home, model_path):
    home = new_home()
    out = ok(
        m3(
            "--model",
            str(model_path),
            "generate",
            "Monday, Tuesday, Wednesday,",
            "--max-tokens",
            "8",
            home=home,
        )
    )
    assert out.startswith("Monday, Tuesday, Wednesday,")
    assert "Thursday, Friday" in out


def test_missing_model(tmp_path):
    result = m3("--model", str(tmp_path / "nope.gguf"), "generate", "hi", home=tmp_path / "home")
    assert_one_sentence_error(result, "not found", "m3.log")


@pytest.mark.parametrize(
    ("benchmark", "flag", "which"),
    [
        ("engine", ("--sample", "5"), "the qa benchmark only"),
        ("editing", ("--main",), "the qa benchmark only"),
        ("engine", ("--profile", "dense"), "the qa and editing benchmarks only"),
        ("soak", ("--reader", "base"), "the qa and editing benchmarks only"),
    ],
)
def test_qa_options_are_refused_for_other_benchmarks(tmp_path, benchmark, flag, which):
    """Before any model loads: one usage sentence, exit status 2."""
    result = m3("bench", benchmark, *flag, home=tmp_path / "home")
    assert result.returncode == 2
    assert f"{flag[0]} applies to {which}." in result.stderr


@pytest.mark.parametrize(
    ("flag", "error"),
    [
        (("--profile", "densest"), "There is no memory profile 'densest'; choose one of dense, "),
        (("--reader", "no-such-reader.safetensors"), "The memory reader "),
    ],
)
def test_editing_refuses_an_unknown_profile_or_reader_before_anything_is_written(tmp_path, flag, error):
    """No results folder, no model copied into the home's cache, no service started."""
    result = m3("bench", "editing", *flag, "--out", str(tmp_path / "out"), home=tmp_path / "home")
    assert_one_sentence_error(result, error)
    assert not (tmp_path / "out").exists() and not (tmp_path / "home" / "cache").exists()
    assert not (tmp_path / "home" / "data").exists()


@pytest.mark.parametrize(
    "args",
    [("ask",), ("generate",), ("bank", "remove"), ("bank", "export", "x.m3bank", "--folder")],
)
def test_text_that_is_not_utf8_is_refused_in_one_sentence(tmp_path, args):
    """`m3 ask café` typed in a Latin-1 terminal: argv's bytes kept as lone surrogates, which no JSON
    request can carry; refused before any service starts."""
    result = m3(*args, b"caf\xe9", home=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "it is not valid UTF-8: set the terminal's encoding to UTF-8 (LANG=C.UTF-8)." in result.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "args",
    [("watch",), ("unwatch",), ("ingest",), ("bank", "inspect"), ("bank", "import"), ("bank", "export")],
)
def test_a_path_whose_name_is_not_utf8_is_refused_in_one_sentence(tmp_path, args):
    """A folder or bank file named in Latin-1 bytes: the service's JSON cannot carry its name."""
    result = m3(*args, b"/tmp/r\xe9sum\xe9", home=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "its name is not valid UTF-8, which memory3 cannot keep: rename it." in result.stderr
    assert not (tmp_path / "data").exists()


def test_an_empty_reader_is_refused_before_any_model_loads(tmp_path):
    result = m3("bench", "qa", "--main", "--reader", " ", home=tmp_path / "home")
    assert result.returncode == 2
    assert "Invalid value for --reader: give trained, base or a reader file's path." in result.stderr


@pytest.mark.parametrize("kind", ["missing", "folder"])
def test_a_reader_file_that_is_not_there_stops_the_qa_bench_before_the_model_loads(tmp_path, kind: str):
    """Whether a reader fits the model needs the model; whether it is there does not (no weight cache
    is prepared: the model was never loaded)."""
    home, reader = tmp_path / "home", tmp_path / "reader.safetensors"
    if kind == "folder":
        reader.mkdir()
    result = m3("bench", "qa", "--main", "--reader", str(reader), home=home)
    why = "does not exist." if kind == "missing" else "is a folder, not a reader file."
    assert_one_sentence_error(result, f"The memory reader {reader} {why}")
    assert not (home / "cache" / "weights").exists()


def test_a_results_folder_that_cannot_be_made_is_one_sentence(tmp_path):
    """Before any model loads: a file where the results folder should be."""
    (tmp_path / "taken").write_text("not a folder")
    result = m3("bench", "qa", "--main", "--out", str(tmp_path / "taken"), home=tmp_path / "home")
    assert_one_sentence_error(result, f"Cannot write the results into {tmp_path / 'taken'}: File exists.")


@pytest.mark.parametrize("content", [b"", b"GGUF" + bytes(range(256)) * 8, b"just some text\n" * 100])
def test_corrupt_model(tmp_path, content):
    path = tmp_path / "broken.gguf"
    path.write_bytes(content)
    assert_one_sentence_error(
        m3("--model", str(path), "generate", "hi", home=tmp_path / "home"), "not a readable GGUF"
    )


def test_truncated_model(tmp_path):
    path = write_tiny_gguf(tmp_path / "tiny.gguf", "llama")
    path.write_bytes(path.read_bytes()[:-5000])
    assert_one_sentence_error(m3("--model", str(path), "generate", "hi", home=tmp_path / "home"), str(path))


def test_unsupported_architecture(tmp_path):
    path = write_tiny_gguf(tmp_path / "odd.gguf", "llama", architecture="mamba")
    result = m3("--model", str(path), "generate", "hi", home=tmp_path / "home")
    assert_one_sentence_error(result, "mamba", "not supported")


def test_empty_prompt_and_unknown_device(tmp_path, new_home, tiny_model):
    home = new_home()
    for prompt in ["", "   \n"]:
        assert_one_sentence_error(m3("--model", str(tiny_model), "generate", prompt, home=home), "empty")
    ok(m3("stop", home=home))
    result = m3("--model", str(tiny_model), "--device", "quantum", "generate", "hi", home=home)
    assert_one_sentence_error(result, "quantum")


# --- folders, ingest, ask, doctor (the bundled model) ---------------------------------------------------


def test_folders_scan_and_status(tmp_path, new_home, model_path):
    """A user's session: add a folder, scan it, see a broken file's reason, edit, rescan, remove."""
    home, notes = new_home(), tmp_path / "notes"
    (notes / "sub").mkdir(parents=True)
    (notes / "a.md").write_text("# Plans\n\nBuy a kite.\n\nFly it on Sunday.\n")
    (notes / "sub" / "b.txt").write_text("The spare key is under the blue pot.\n")
    (notes / "broken.pdf").write_bytes(b"%PDF-1.7\n" + bytes(range(256)))
    (notes / ".git").mkdir()
    (notes / ".git" / "config").write_text("ignored\n")
    (notes / "street.txt").write_bytes("Straße 12".encode("cp1252"))  # read, with a doubt
    (Path(os.fsdecode(os.fsencode(notes) + b"/r\xe9sum\xe9-2019.txt"))).write_text("CV\n")  # not UTF-8

    def run(*args: str) -> str:
        return ok(m3("--model", str(model_path), *args, home=home))

    assert "Watching" in run("watch", str(notes))
    assert run("folders").splitlines() == [str(notes.resolve())]
    out = run("ingest")
    assert " deleted, 2 failed." in out  # as many as the status lists (the service may have seen them first)
    assert "Documents: 5 (3 parsed, 0 pending, 2 failed)" in out
    assert "broken.pdf" in out and "failed" in out
    assert f"failed: {notes.resolve()}/r\\xe9sum\\xe9-2019.txt: file name is not valid UTF-8" in out
    assert f"warning: {notes.resolve()}/street.txt: encoding guessed as cp1252" in out
    (notes / "sub" / "b.txt").write_text("The spare key is under the red pot now.\n")
    (notes / "a.md").rename(notes / "sub" / "plans.md")
    out = run("ingest", str(notes))
    assert "Documents: 5 (3 parsed, 0 pending, 2 failed)" in out
    assert "plans.md" not in out  # only failures are listed
    assert "broken.pdf" in run("status")
    other = tmp_path / "other"
    other.mkdir()
    (other / "c.txt").write_text("Another note.\n")
    assert "Watching" in run("ingest", str(other))  # ingesting an unwatched folder watches it first
    assert len(run("folders").splitlines()) == 2
    run("unwatch", str(other))
    assert "No longer watching" in run("unwatch", str(notes))
    assert "Documents: 0" in run("status")
    assert (notes / "sub" / "plans.md").exists()  # forgetting a folder never touches the files


def test_status_lists_what_a_search_will_not_find(tmp_path, new_home, tiny_model):
    """Files over the size limit by name, types not read by suffix, .m3ignore's as a count: in the lines
    and in `--json` (the /v1/status object, its `skipped` key a contract)."""
    home, notes = new_home(), tmp_path / "notes"
    (home / "config").mkdir()
    (home / "config" / "config.toml").write_text("[ingest]\nmax_file_mb = 1\n")
    (notes / "photos").mkdir(parents=True)
    (notes / "plan.md").write_text("# Plan\n\nSail on Sunday.\n")
    (notes / "scan.pdf").write_bytes(b"%PDF-1.7\n" + b"x" * (3 * 2**19))
    for i in range(30):
        (notes / "photos" / f"{i}.jpg").write_bytes(b"\xff\xd8\xff")
    (notes / "backup.zip").write_bytes(b"PK\x03\x04")
    (notes / "private").mkdir()
    (notes / "private" / "diary.txt").write_text("not for search\n")
    (notes / ".m3ignore").write_text("private/\n")
    model = ("--model", str(tiny_model))
    ingested = m3(*model, "ingest", str(notes), home=home)
    out, root = ok(ingested), notes.resolve()
    assert f"scanning {root}: 0 files found, 0 new or changed" in ingested.stderr  # told as it starts
    assert "Not searchable: 1 over the size limit, 31 of a type memory3 does not read, 1 left out" in out
    assert f"  too large: {root}/scan.pdf: 1.5 MB, over the 1 MB limit (max_file_mb)" in out
    assert "  not read: .jpg 30, .zip 1\n" in out
    assert "photos/0.jpg" not in out and "diary" not in out
    status = json.loads(ok(m3(*model, "status", "--json", home=home)))
    assert status["documents"]["seen"] == 1 and status["folders"] == [str(root)]
    too_large = {"path": f"{root}/scan.pdf", "reason": "1.5 MB, over the 1 MB limit (max_file_mb)"}
    assert status["skipped"] == {
        "too_large": 1,
        "too_large_files": [too_large],
        "unsupported": 31,
        "unsupported_types": [{"suffix": ".jpg", "files": 30}, {"suffix": ".zip", "files": 1}],
        "ignored": 1,
    }
    (notes / "scan.pdf").unlink()
    (notes / ".m3ignore").unlink()
    out = ok(m3(*model, "ingest", home=home))
    assert "Not searchable: 31 of a type memory3 does not read\n" in out and "too large" not in out


def test_watching_a_missing_folder_is_one_sentence(tmp_path, new_home, tiny_model):
    result = m3("--model", str(tiny_model), "watch", str(tmp_path / "nowhere"), home=new_home())
    assert_one_sentence_error(result, "does not exist")


def test_ask_json_and_doctor_repairs_a_damaged_bank_and_index(tmp_path, new_home, model_path):
    """`m3 ask --json` keeps its contract; `m3 doctor` finds a flipped byte in the bank and a damaged
    vector index (damaged while no service runs, as a crash or a disk would), rebuilds both, and the next
    ingest writes the lost memory again from its text."""
    home, notes = new_home(), tmp_path / "notes"
    notes.mkdir()
    boat = "---\ntitle: Our boat\ndate: 2021-06-05\ntags: [sailing]\ndraft: true\n---\n"
    boat += "# Boat\n\nThe boat is called the Silver Heron.\n"
    (notes / "boat.md").write_text(boat)  # front matter: the citation's, not the text's
    (notes / "tea.txt").write_text("Green tea is steeped for two minutes.\n")

    def run(*args: str) -> str:
        return ok(m3("--model", str(model_path), *args, home=home))

    run("ingest", str(notes))
    out = json.loads(run("ask", "What is the name of the boat?", "--json"))
    assert set(out) == {"answer", "mode", "citations", "reads", "withdrawn"} and out["mode"] == "memory"
    assert "Heron" in out["answer"] and out["withdrawn"] is None  # the boat's name is in its source
    first = out["citations"][0]
    keys = {"n", "path", "page", "line_start", "line_end", "text", "share", "hash", "front_matter", "missing"}
    assert set(first) == keys and not first["missing"]
    assert first["n"] == 1 and first["path"] == str(notes.resolve() / "boat.md")
    assert (first["line_start"], first["line_end"]) == (7, 9)  # the file's lines: front matter is not text
    assert "title" not in first["text"]
    assert first["front_matter"] == {"title": "Our boat", "date": "2021-06-05", "tags": ["sailing"]}
    assert first["hash"] == hashlib.sha256(first["text"].encode()).hexdigest()  # the chunk's
    assert out["reads"][0]["step"] == 0 and out["reads"][0]["query"] == "What is the name of the boat?"
    assert first["hash"] in {s["hash"] for r in out["reads"] for s in r["sources"]}
    # Japan's capital is in neither note: withdrawn and read again as text; a pipe gets the final answer
    out = json.loads(run("ask", "What is the capital of Japan?", "--json"))
    assert set(out["withdrawn"]) == {"text", "names"} and "Tokyo" in out["withdrawn"]["names"]
    japan = m3("--model", str(model_path), "ask", "What is the capital of Japan?", home=home)
    assert japan.returncode == 0 and "That named Tokyo" in japan.stderr, japan.stderr
    lines = japan.stdout.splitlines()
    assert lines[0] == out["answer"] and all(line.startswith("[") for line in lines[1:])  # then the sources

    run("stop")
    segment = next((home / "data" / "bank").glob("seg-*.m3s"))
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    (home / "data" / "retrieval" / "hnsw" / "index.bin").write_bytes(b"garbage")
    report = run("doctor")
    assert "bank:" in report and "1 memories lost" in report
    assert "index:" in report
    assert "FAIL" not in report
    run("doctor")  # now clean
    assert "0 waiting for memories" in run("ingest")  # the lost memory was written again
    assert "Heron" in json.loads(run("ask", "What is the name of the boat?", "--json"))["answer"]


# --- the service's lifetime (the tiny model) ------------------------------------------------------------


def test_a_command_starts_the_service_and_the_next_reuses_it(tmp_path, new_home, tiny_model):
    home = new_home()
    model = ("--model", str(tiny_model))
    assert "Documents: 0" in ok(m3(*model, "status", home=home))
    pid = service_pid(home)
    ok(m3(*model, "ask", "Anyone there?", "--mode", "none", home=home))
    assert service_pid(home) == pid and alive(pid)
    assert model_loads(home, tiny_model) == 1  # the second command found the model loaded
    assert f"already running (pid {pid})" in ok(m3("serve", home=home))
    assert f"Stopped the engine service (pid {pid})" in ok(m3("stop", home=home))
    assert not alive(pid)
    assert "not running" in ok(m3("stop", home=home))


def model_loads(home: Path, model: Path) -> int:
    """How many times a service of `home` loaded `model` (the runtime logs each load)."""
    return (home / "data" / "logs" / "m3.log").read_text().count(f": loaded {model.name} ")


def test_serve_starts_in_the_background_and_says_where_it_listens(tmp_path, new_home, tiny_model):
    home = new_home()
    out = ok(m3("--model", str(tiny_model), "serve", home=home))
    assert f"(pid {service_pid(home)}) listens on {home.resolve() / 'data' / 'm3.sock'}" in out
    assert "already running" in ok(m3("serve", home=home))


def test_serve_in_the_foreground_until_stopped(tmp_path, new_home, tiny_model):
    """What systemd runs: the service in the `m3` process itself, ended cleanly by `m3 stop`."""
    home = new_home()
    command = [str(M3), "--model", str(tiny_model), "serve", "--foreground"]
    with subprocess.Popen(command, env=environment(home), stderr=subprocess.PIPE, text=True) as serving:
        deadline = time.monotonic() + 60
        while not (home / "data" / "service.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)  # it holds the lock: a client's own service would now lose the race to it
        assert service_pid(home) == serving.pid
        assert "Documents: 0" in ok(m3("status", home=home))  # connects to it once it is ready
        assert service_pid(home) == serving.pid
        ok(m3("stop", home=home))
        assert serving.wait(timeout=60) == 0


def test_a_killed_service_is_restarted_by_the_next_command(tmp_path, new_home, tiny_model):
    home = new_home()
    model = ("--model", str(tiny_model))
    ok(m3(*model, "folders", home=home))
    pid = service_pid(home)
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid)
    assert "Documents: 0" in ok(m3(*model, "status", home=home))  # a stale socket and lock: no matter
    assert service_pid(home) != pid


def test_a_service_whose_socket_is_gone_is_named_and_stopped(tmp_path, new_home, tiny_model):
    """The socket file deleted under a running service: a command says within seconds which process holds
    the folder (it used to wait 10 minutes), and `m3 stop` finds it through service.json."""
    home = new_home()
    model = ("--model", str(tiny_model))
    ok(m3(*model, "folders", home=home))
    pid = service_pid(home)
    (home / "data" / "m3.sock").unlink()
    started = time.monotonic()
    assert_one_sentence_error(m3(*model, "status", home=home), f"pid {pid}", "`m3 stop`")
    assert time.monotonic() - started < 60
    assert f"pid {pid}" in ok(m3("stop", home=home))
    assert wait_gone(pid, timeout=5)
    assert "Documents: 0" in ok(m3(*model, "status", home=home))


def test_a_frozen_service_is_stopped_cleanly(tmp_path, new_home, tiny_model):
    """A stopped (SIGSTOP) process cannot answer `m3 stop`'s request: it is signalled, woken and exits
    cleanly (its service.json removed), not killed after a minute."""
    home = new_home()
    ok(m3("--model", str(tiny_model), "folders", home=home))
    pid = service_pid(home)
    os.kill(pid, signal.SIGSTOP)
    started = time.monotonic()
    assert f"pid {pid}" in ok(m3("stop", home=home))
    assert time.monotonic() - started < 30
    assert not (home / "data" / "service.json").exists()


def test_a_service_that_refuses_to_start_says_why(tmp_path, new_home, tiny_model):
    """Its sentence (here: a bad setting) reaches the user, not just "it stopped; see the log"."""
    home = new_home()
    (home / "config").mkdir()
    (home / "config" / "config.toml").write_text("[service]\nidle_minutes = 'soon'\n")
    assert_one_sentence_error(m3("--model", str(tiny_model), "status", home=home), "idle_minutes", "soon")


def test_the_data_folder_is_private(tmp_path, new_home, tiny_model):
    """Chats and documents' text are readable by their owner only."""
    home = new_home()
    ok(m3("--model", str(tiny_model), "folders", home=home))
    data = home / "data"
    assert data.stat().st_mode & 0o777 == 0o700
    assert (data / "logs").stat().st_mode & 0o777 == 0o700
    for name in ("catalog.db", "m3.sock", "service.json", "logs/m3.log"):
        assert (data / name).stat().st_mode & 0o077 == 0, name


def test_two_commands_starting_at_once_share_one_service(tmp_path, new_home, tiny_model):
    home = new_home()
    command = [str(M3), "--model", str(tiny_model), "status"]
    both = [
        subprocess.Popen(
            command, env=environment(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    for p in both:
        out, err = p.communicate(timeout=TIMEOUT_S)
        assert p.returncode == 0, err
        assert "Documents: 0" in out
    pid = service_pid(home)
    assert alive(pid)
    assert model_loads(home, tiny_model) == 1


def test_another_model_than_the_running_one_is_refused(tmp_path, new_home, tiny_model):
    home = new_home()
    ok(m3("--model", str(tiny_model), "folders", home=home))
    other = write_tiny_gguf(tmp_path / "other.gguf", "gemma3", seed=1)
    assert_one_sentence_error(m3("--model", str(other), "folders", home=home), str(tiny_model), "m3 stop")
    ok(m3("folders", home=home))  # no model named: whatever runs will do


@pytest.mark.parametrize("frozen", [False, True], ids=["answering", "frozen"])
def test_ctrl_c_stops_the_answer_but_not_the_service(tmp_path, new_home, frozen):
    """Ctrl-C during `m3 ask`: the command prints what came and exits 130; the service stays up and saves
    the answer as far as it went, marked stopped. A service too busy to answer the stop request at once
    (here: frozen with SIGSTOP) does not keep the command waiting: hanging up stops the answer too."""
    home = new_home()
    (home / "config").mkdir()
    (home / "config" / "config.toml").write_text("[engine]\nmax_answer_tokens = 100000\n")
    # Greedy decoding with this one repeats a whitespace control character, which neither ends an answer
    # nor counts as a loop: the answer runs until it is stopped.
    endless = write_tiny_gguf(
        tmp_path / "endless.gguf", "gemma3", seed=3, out_gain=1.0, context_length=1 << 17
    )
    model = ("--model", str(endless))
    ok(m3(*model, "folders", home=home))
    pid = service_pid(home)
    command = [str(M3), *model, "ask", "Tell me everything.", "--mode", "none"]
    with subprocess.Popen(
        command, env=environment(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=ctrl_c_on
    ) as asking:
        assert asking.stdout is not None
        first = asking.stdout.read(1)  # the answer is streaming
        if frozen:
            os.kill(pid, signal.SIGSTOP)
        interrupted = time.monotonic()
        asking.send_signal(signal.SIGINT)
        try:
            out, err = asking.communicate(timeout=60)
        finally:
            os.kill(pid, signal.SIGCONT)
    assert asking.returncode == 130, err
    assert time.monotonic() - interrupted < 20  # the stop request waits 5 s at most
    assert b"Traceback" not in err and first
    assert alive(pid) and service_pid(home) == pid
    deadline = time.monotonic() + 30
    while not (saved := saved_answers(home)) and time.monotonic() < deadline:
        time.sleep(0.1)  # the answer is saved once its generation has seen the stop
    assert len(saved) == 1 and saved[0]["stopped"] == 1
    assert (first + out).decode().strip().startswith(saved[0]["text"])
    assert "Documents: 0" in ok(m3(*model, "status", home=home))  # the same service serves on


def saved_answers(home: Path) -> list[dict]:
    """The assistant's messages in the catalog (read only, beside the running service)."""
    db = sqlite3.connect(f"file:{home / 'data' / 'catalog.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    rows = db.execute("SELECT * FROM messages WHERE role = 'assistant' ORDER BY id").fetchall()
    db.close()
    return [dict(r) for r in rows]
