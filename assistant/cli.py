"""The `m3` command: a thin client of the engine service, which it starts when none runs.

Errors reach the user as one sentence and a non-zero exit; logs go to a file. Nothing here loads a model:
the service keeps it loaded between commands (`m3 serve --foreground` and `m3 bench` are the two
commands that run the engine in this process, and import it only when run).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import msgspec

from assistant.bank_text import exported_text, report_text, stage_line
from assistant.spinner import Spinner
from assistant.units import some_of
from engine.service import client as service
from engine.service.client import (
    BankProgress,
    BankReport,
    Citation,
    Citations,
    Client,
    Done,
    Exported,
    MemoryProgress,
    Read,
    Reads,
    ScanDone,
    Scanning,
    ScanProgress,
    Skipped,
    Stream,
    Text,
    Withdrawn,
)
from ingest.errors import M3Error
from ingest.paths import Home

FOLLOW_POLL_S = 1.0
INTERRUPTED = 130  # the shell's status for a command ended by Ctrl-C
CLEAR_LINE = "\x1b[K"  # a terminal's erase to the end of the line


NOT_UTF8 = "it is not valid UTF-8: set the terminal's encoding to UTF-8 (LANG=C.UTF-8)."


class Utf8Text(click.ParamType):
    """Text for the engine: a terminal in another encoding hands Python bytes it cannot decode (kept as
    lone surrogates), which no JSON request can carry; the user is told, not the log."""

    name = "text"

    def convert(self, value: str, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            self.fail(NOT_UTF8, param, ctx)
        return value


class Utf8Path(click.Path):
    """A path sent to the engine service, whose JSON carries text only: a name that is not valid UTF-8 is
    refused in one sentence (files of such names inside a folder are listed as failed by the engine)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        path = super().convert(value, param, ctx)
        try:
            str(path).encode("utf-8")
        except UnicodeEncodeError:
            self.fail("its name is not valid UTF-8, which memory3 cannot keep: rename it.", param, ctx)
        return path


TEXT = Utf8Text()
PATH = Utf8Path(path_type=Path)


@dataclass
class Session:
    """What every command shares: the home, the model and device asked for, and, once a command needs
    it, a client of the ready service."""

    home: Home
    model: str | None
    device: str | None
    _client: Client | None = None

    def client(self) -> Client:
        if self._client is None:
            try:
                with Spinner() as spinner:
                    self._client = service.connect_or_start(self.home, self.model, self.device, spinner.show)
            except KeyboardInterrupt:  # while the service starts: it goes on starting, for the next command
                raise click.exceptions.Exit(INTERRUPTED) from None
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def pass_client(command: Callable[..., Any]) -> Callable[..., Any]:
    """Hand the command a client of the running service (started first if need be)."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        return command(click.get_current_context().find_object(Session).client(), *args, **kwargs)

    return run


@click.group(invoke_without_command=True)
@click.option(
    "--model",
    "model_path",
    type=click.Path(),
    envvar="M3_MODEL",
    default=None,
    help="A GGUF model file (default: the bundled Gemma 3 270M).",
)
@click.option("--device", default=None, help="cpu or cuda (default: cuda when present).")
@click.pass_context
def cli(ctx: click.Context, model_path: str | None, device: str | None) -> None:
    """memory3: chat with your folders through explicit memories. With no command: the app."""
    ctx.obj = Session(Home.from_env(), model_path, device)
    ctx.call_on_close(ctx.obj.close)
    if ctx.invoked_subcommand is None:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            raise click.ClickException(
                "m3 with no command opens the app, which needs a terminal; see m3 --help."
            )
        # A lone Esc (stop the answer) is told from an escape sequence after this many ms. Textual's
        # default, 100, plus its input thread's 100 ms poll, made a stop wait up to 0.2 s before the app
        # even saw it; ESCDELAY set by the user wins.
        os.environ.setdefault("ESCDELAY", "25")
        from assistant.app import run  # Textual is loaded only for the app

        ctx.exit(run(ctx.obj.home, model_path, device))


@cli.command()
@click.argument("prompt", type=TEXT)
@click.option("--max-tokens", default=64, show_default=True, type=click.IntRange(1, 4096))
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(0, 5))
@click.option("--top-p", default=1.0, show_default=True, type=click.FloatRange(0, 1, min_open=True))
@click.option("--seed", default=None, type=int)
@pass_client
def generate(
    client: Client, prompt: str, max_tokens: int, temperature: float, top_p: float, seed: int | None
) -> None:
    """Continue PROMPT with the model, streaming the text."""
    stream = client.generate(prompt, max_tokens, temperature, top_p, seed)
    click.echo(prompt, nl=False)
    relayed = _relay(stream, echo=True, lead=False)
    click.echo()
    _end(relayed)


@cli.command()
@click.argument("path", type=PATH)
@pass_client
def watch(client: Client, path: Path) -> None:
    """Add PATH to the watched folders (the service reads it at once and follows its changes)."""
    click.echo(f"Watching {client.add_folder(path).path}")


@cli.command()
@click.argument("path", type=PATH)
@pass_client
def unwatch(client: Client, path: Path) -> None:
    """Stop watching PATH and forget its documents (your files are not touched)."""
    click.echo(f"No longer watching {client.remove_folder(path).path}")


@cli.command()
@pass_client
def folders(client: Client) -> None:
    """The watched folders, one per line."""
    for folder in client.folders():
        click.echo(folder.path)


@cli.command()
@click.argument("path", required=False, type=PATH)
@click.option("--follow", is_flag=True, help="Keep showing the service's progress until Ctrl-C.")
@pass_client
def ingest(client: Client, path: Path | None, follow: bool) -> None:
    """Bring the catalog in step with the watched folders (or just PATH, watched first if need be)."""
    if path is not None:
        try:
            click.echo(f"Watching {client.add_folder(path).path}")
        except service.ServiceError as exc:
            if exc.status != 409:  # 409: watched already, which is fine here
                raise
    report = _scan(client, path)
    click.echo(
        f"\n{report.new} new, {report.changed} changed, {report.moved} moved, {report.deleted} deleted, "
        f"{report.failed} failed."
    )
    for folder in report.missing:
        click.echo(f"Missing folder (kept; is a drive unplugged?): {folder}", err=True)
    for folder, reason in report.unreadable:
        click.echo(f"Could not list {folder}: {reason}", err=True)
    _echo_status(client)
    if follow:
        _follow(client)


def _scan(client: Client, path: Path | None) -> ScanDone:
    """Scan on the service, showing its progress on stderr; its report."""
    with client.scan(path) as stream:
        try:
            for event in stream:
                if isinstance(event, ScanProgress) and event.scanning is not None:
                    _show_walk(event.scanning)
                elif isinstance(event, ScanProgress):
                    e = event
                    _show_progress(e.files_parsed, e.files_failed, e.files_seen, e.chunks, e.chunks_pending)
                elif isinstance(event, MemoryProgress):
                    _overwrite(f"writing memories: {event.done}/{event.total}")
                elif isinstance(event, ScanDone):
                    return event
        except BaseException:
            click.echo(err=True)  # end the progress line, so that what follows starts on its own
            raise
    raise service.ServiceError("The engine service ended the scan without its report.")


def _follow(client: Client) -> None:
    """The service follows the folders anyway; this shows its progress as it goes, until Ctrl-C."""
    try:
        while True:
            s = client.status()
            d = s.documents
            if s.scanning is not None:
                _show_walk(s.scanning)
            else:
                _show_progress(d.parsed, d.failed, d.seen, s.chunks, s.chunks_pending)
            time.sleep(FOLLOW_POLL_S)
    except KeyboardInterrupt:
        click.echo(err=True)


def _show_progress(parsed: int, failed: int, seen: int, chunks: int, chunks_pending: int) -> None:
    _overwrite(
        f"{parsed + failed}/{seen} files read, {failed} failed, {chunks} chunks, "
        f"{chunks_pending} waiting for memories"
    )


def _show_walk(s: Scanning) -> None:
    """A scan still walking the folders: where, and what it found so far."""
    _overwrite(f"scanning {s.folder}: {s.files_found:,} files found, {s.files_changed:,} new or changed")


def _overwrite(line: str) -> None:
    """`line` on stderr in place of the progress line before it (cleared to its end on a terminal)."""
    click.echo(f"\r{line}{CLEAR_LINE if sys.stderr.isatty() else ''}", nl=False, err=True)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the service's status as one JSON object.")
@pass_client
def status(client: Client, as_json: bool) -> None:
    """Folders, documents, chunks, memory work left, every document that failed with its reason, and the
    files a search will not find (too large, of a type not read, left out by .m3ignore)."""
    if as_json:
        click.echo(json.dumps(msgspec.to_builtins(client.status()), ensure_ascii=False))
    else:
        _echo_status(client)


def _echo_status(client: Client) -> None:
    s = client.status()
    d = s.documents
    click.echo(f"Folders: {len(s.folders)}")
    for folder in s.folders:
        gone = " (missing from the disk: renamed, or a drive unplugged? its documents are kept)"
        click.echo(f"  {folder}{gone if folder in s.missing_folders else ''}")
    if s.collections:
        click.echo(f"Imported collections: {', '.join(s.collections)}")
    if s.imports_pending:
        click.echo(f"Bank imports still being applied: {s.imports_pending} (their memories and vectors)")
    click.echo(f"Documents: {d.seen} ({d.parsed} parsed, {d.pending} pending, {d.failed} failed)")
    if (w := s.scanning) is not None:
        click.echo(f"Scanning {w.folder}: {w.files_found:,} files found, {w.files_changed:,} new or changed")
    click.echo(f"Chunks: {s.chunks} ({s.chunks_pending} waiting for memories, {s.memories_to_drop} to drop)")
    for failure in s.failures:
        click.echo(f"  failed: {failure.path}: {failure.reason}")
    for warning in s.warnings:
        click.echo(f"  warning: {warning.path}: {warning.reason}")
    _echo_skipped(s.skipped)


def _echo_skipped(k: Skipped) -> None:
    """What a search will not find: files over the size limit by name, the types not read by suffix,
    what .m3ignore leaves out as a count."""
    said = {
        "over the size limit": k.too_large,
        "of a type memory3 does not read": k.unsupported,
        "left out by .m3ignore (files or folders)": k.ignored,
    }
    if not any(said.values()):
        return
    click.echo("Not searchable: " + ", ".join(f"{n:,} {why}" for why, n in said.items() if n))
    for skipped in k.too_large_files:
        click.echo(f"  too large: {skipped.path}: {skipped.reason}")
    if k.too_large > len(k.too_large_files):
        click.echo(f"  too large: {k.too_large - len(k.too_large_files):,} more")
    if k.unsupported_types:
        types = [f"{t.suffix or 'no suffix, not text'} {t.files:,}" for t in k.unsupported_types]
        shown = sum(t.files for t in k.unsupported_types)
        more = f", other types {k.unsupported - shown:,}" if k.unsupported > shown else ""
        click.echo(f"  not read: {', '.join(types)}{more}")


@cli.command()
@click.argument("question", type=TEXT)
@click.option("--mode", type=click.Choice(["memory", "rag", "none"]), default="memory", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of streaming.")
@pass_client
def ask(client: Client, question: str, mode: str, as_json: bool) -> None:
    """Answer QUESTION from your documents, then list the numbered sources as path:line.

    Ctrl-C stops the answer; what was said is kept (saved, marked stopped) and the exit status is 130."""
    # piped, a memory answer comes whole at its end: one may be withdrawn, and a pipe cannot take it back
    live = not as_json and (mode != "memory" or sys.stdout.isatty())
    relayed = _relay(client.ask(question, mode), echo=live)
    cited = [c.as_dict() for c in relayed.citations]
    withdrawn = relayed.withdrawn
    if as_json:
        reads = msgspec.to_builtins(relayed.reads)
        out = {"answer": relayed.text, "mode": mode, "citations": cited, "reads": reads}
        out["withdrawn"] = withdrawn and msgspec.structs.asdict(withdrawn)
        click.echo(json.dumps(out, ensure_ascii=False))
    else:
        if not live:
            if withdrawn:
                click.echo(_withdrawn_line(withdrawn), err=True)
            click.echo(relayed.text, nl=False)
        click.echo()
        for c in cited:
            page = f" (page {c['page']})" if c["page"] else ""
            title = f" “{c['front_matter']['title']}”" if "title" in c["front_matter"] else ""
            gone = " (missing from the disk)" if c["missing"] else ""
            span = f"{c['line_start']}-{c['line_end']}"
            click.echo(f"[{c['n']}] {c['path']}:{span}{page}{title}{gone}  {c['share']:.0%}")
    if not cited and mode != "none" and client.status().chunks == 0:
        click.echo(
            "No documents are ingested yet, so this answer has no sources: `m3 ingest PATH`.", err=True
        )
    _end(relayed)


@dataclass(frozen=True)
class Relayed:
    text: str
    citations: list[Citation]
    reads: list[Read]  # what the model read: one entry per retrieval
    interrupted: bool  # by Ctrl-C here
    stopped: bool  # before it finished, by us or by the service (shutting down)
    withdrawn: Withdrawn | None = None  # a memory answer taken back and answered again from text


def _relay(stream: Stream, echo: bool, lead: bool = True) -> Relayed:
    """Print a stream's text as it comes (lead=True: without the answer's leading space). Ctrl-C stops
    it on the service, which keeps what was said."""
    pieces: list[str] = []
    citations: list[Citation] = []
    reads: list[Read] = []
    withdrawn: Withdrawn | None = None
    with stream:
        try:
            for event in stream:
                if isinstance(event, Text):
                    text = event.text if pieces or not lead else event.text.lstrip()
                    pieces.append(event.text)
                    if echo and text:
                        click.echo(text, nl=False)
                elif isinstance(event, Withdrawn):
                    withdrawn, pieces = event, []
                    if echo:
                        click.echo()
                        click.echo(_withdrawn_line(event), err=True)
                elif isinstance(event, Reads):
                    reads = event.reads
                elif isinstance(event, Citations):
                    citations = event.citations
                elif isinstance(event, Done):
                    return Relayed(event.text, citations, reads, False, event.stopped, withdrawn)
        except KeyboardInterrupt:
            # the service is gone (nothing left to stop), or a second Ctrl-C: hanging up stops it too
            with contextlib.suppress(M3Error, KeyboardInterrupt):
                stream.cancel()
            text = "".join(pieces).strip()
            return Relayed(text, citations, reads, interrupted=True, stopped=True, withdrawn=withdrawn)
    raise service.ServiceError("The engine service ended the answer without finishing it.")


def _withdrawn_line(event: Withdrawn) -> str:
    return f"(That named {some_of(event.names)}, which none of its sources says; reading them again as text:)"


def _end(relayed: Relayed) -> None:
    """Exit 130 after a Ctrl-C; 1, with a sentence, when the service stopped the answer itself."""
    if relayed.interrupted:
        raise click.exceptions.Exit(INTERRUPTED)
    if relayed.stopped:
        raise M3Error("The engine service stopped this answer before it finished (it was shutting down).")


@cli.group()
def bank() -> None:
    """The memory bank."""


@bank.command("stats")
@pass_client
def bank_stats(client: Client) -> None:
    """Memories stored, bytes on disk, budget, and memories by profile."""
    for key, value in client.bank_stats().items():
        if isinstance(value, dict):  # by_profile: one line per profile
            click.echo(f"{key}:")
            for name, figures in value.items():
                click.echo(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))
        else:
            click.echo(f"{key}: {value}")


@bank.command("export")
@click.argument("file", type=PATH)
@click.option(
    "--folder", type=TEXT, help="Only this watched folder (its path) or imported collection (its label)."
)
@click.option(
    "--documents", type=TEXT, metavar="GLOB", help="Only documents whose label/path or full path match GLOB."
)
@click.option("--no-vectors", is_flag=True, help="Leave the vectors out (the importer computes them).")
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@pass_client
def bank_export(
    client: Client, file: Path, folder: str | None, documents: str | None, no_vectors: bool, force: bool
) -> None:
    """Write documents, chunks, memories and vectors to a bank file (it holds your documents' text)."""
    if folder and documents:
        raise click.UsageError("Give --folder or --documents, not both.")
    stream = client.export_bank(file, folder, documents, vectors=not no_vectors, replace=force)
    done = _bank_stream(stream, Exported, "The export was cancelled; no file was written.")
    click.echo(exported_text(done))


@bank.command("inspect")
@click.argument("file", type=PATH)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@pass_client
def bank_inspect(client: Client, file: Path, as_json: bool) -> None:
    """Check a bank file: its manifest, whether it fits this engine, and what importing it would do."""
    report = _bank_stream(client.inspect_bank(file), BankReport, "The inspection was cancelled.")
    _echo_report(file, report, as_json)


@bank.command("import")
@click.argument("file", type=PATH)
@click.option("--dry-run", is_flag=True, help="Check and plan only; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@pass_client
def bank_import(client: Client, file: Path, dry_run: bool, as_json: bool) -> None:
    """Import a bank file: nothing changes until every byte of it checks out, then all of it at once."""
    report = _bank_stream(client.import_bank(file, dry_run=dry_run), BankReport, CANCELLED_IMPORT)
    _echo_report(file, report, as_json)


@bank.command("remove")
@click.argument("label", type=TEXT)
@pass_client
def bank_remove(client: Client, label: str) -> None:
    """Forget an imported collection (by its label) and its documents."""
    client.remove_collection(label)
    click.echo(f"Removed the collection {label}.")


CANCELLED_IMPORT = (
    "The import was cancelled; unless the engine had just committed it (m3 status would list its"
    " collection), nothing was changed."
)
COMMITTED_IMPORT = (
    "The import was already committed: its documents are in; the engine applies the rest of its memories"
    " and vectors in the background (m3 status shows it)."
)


def _bank_stream(stream: Stream, result: type, cancelled: str) -> Any:
    """Follow a bank stream, its progress on stderr when that is a terminal; its final event. Ctrl-C
    cancels it (exit 130), saying whether an import had been committed (its applying stages began)."""
    shown = sys.stderr.isatty()
    with stream:
        try:
            for event in stream:
                if isinstance(event, BankProgress) and event.stage.startswith(("applying", "embedding")):
                    cancelled = COMMITTED_IMPORT if cancelled == CANCELLED_IMPORT else cancelled
                if isinstance(event, BankProgress) and shown:
                    click.echo(f"\r\033[K{stage_line(event)}", nl=False, err=True)
                elif isinstance(event, result):
                    if shown:
                        click.echo("\r\033[K", nl=False, err=True)
                    return event
        except KeyboardInterrupt:
            click.echo(f"\n{cancelled}", err=True)
            raise click.exceptions.Exit(INTERRUPTED) from None
        except BaseException:
            if shown:
                click.echo(err=True)
            raise
    raise service.ServiceError("The engine service ended the stream without its report.")


def _echo_report(file: Path, r: BankReport, as_json: bool) -> None:
    click.echo(json.dumps(msgspec.to_builtins(r)) if as_json else report_text(str(file), r).plain)


@cli.command()
@pass_client
def doctor(client: Client) -> None:
    """Check the model, the embedder, the index and the bank; repair what can be repaired."""
    problems = 0
    for check in client.doctor():
        click.echo(f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
        problems += not check.ok
    if problems:
        raise SystemExit(1)


@cli.command()
@click.option("--foreground", is_flag=True, help="Run the service in this process (for systemd or launchd).")
@click.pass_obj
def serve(session: Session, foreground: bool) -> None:
    """Run the engine service: in the background (unless it runs already), or here with --foreground."""
    if foreground:
        from engine.service.__main__ import main as run_service  # the engine loads here, not in a client

        raise click.exceptions.Exit(run_service(service.service_flags(session.model, session.device)))
    health, socket = service.running(session.home), session.home.data / service.SOCKET
    if health is not None:
        click.echo(f"The engine service is already running (pid {health.pid}) on {socket}.")
        return
    client = session.client()
    click.echo(f"The engine service (pid {client.health().pid}) listens on {client.socket}.")


@cli.command()
@click.pass_obj
def stop(session: Session) -> None:
    """Stop the engine service (it saves its work first)."""
    pid = service.stop(session.home)
    click.echo(f"Stopped the engine service (pid {pid})." if pid else "The engine service is not running.")


@cli.command()
@click.argument("name", type=click.Choice(["engine", "retrieval", "qa", "tui", "bank", "soak", "editing"]))
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path), default=Path("bench/results"), show_default=True
)
@click.option("--quick", is_flag=True, help="A small slice: minutes instead of hours (qa: 50 questions).")
@click.option(
    "--sample", type=click.IntRange(min=1), help="qa only: ask a seeded sample of N questions per split."
)
@click.option(
    "--main",
    is_flag=True,
    help="qa only: none, rag and the default memory profile only, with the memory/RAG F1 ratio's interval.",
)
@click.option(
    "--profile",
    help="qa and editing: the engine's memory profile (qa asks it as the default one) "
    "[default: dense-parallel].",
)
@click.option(
    "--reader",
    help="qa and editing: the memory reader: trained, base or a reader file [default: trained].",
)
@click.option(
    "--events",
    type=click.IntRange(min=80),
    help="soak only: how many events [default: 1,000,000; with --quick: 10,000].",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    help="soak only: events handed to the engine at a time, as the watcher gathers them [default: 1].",
)
@click.option(
    "--resume",
    is_flag=True,
    help="soak only: go on with a stopped run from its last checkpoint, with its settings.",
)
@click.pass_obj
def bench(
    session: Session,
    name: str,
    out_dir: Path,
    quick: bool,
    sample: int | None,
    main: bool,
    profile: str | None,
    reader: str | None,
    events: int | None,
    batch: int | None,
    resume: bool,
) -> None:
    """Run benchmark NAME: print its table and write <out>/NAME.json and NAME.md (qa and soak add PNG plots).

    Benchmarks run in temporary homes of their own with the engine's default settings (qa and editing:
    --profile and --reader change two of them): most run the engine in this process; tui and editing
    start an engine service of their own and talk to it, as the app does. The soak keeps its run in
    <data>/bench/soak/, copied at every checkpoint, so that --resume goes on after a stop."""
    qa_options = {"sample": sample, "main": main or None}
    memory_options = {"profile": profile, "reader": reader}
    soak_options = {"events": events, "batch": batch, "resume": resume or None}
    for options, benchmarks, which in (
        (qa_options, ("qa",), "the qa benchmark only"),
        (memory_options, ("qa", "editing"), "the qa and editing benchmarks only"),
        (soak_options, ("soak",), "the soak benchmark only"),
    ):
        for option, value in options.items():
            if value is not None and name not in benchmarks:
                raise click.UsageError(f"--{option} applies to {which}.")
    if resume and quick:
        from bench.soak_run import RESUMED_QUICK  # no torch

        raise click.UsageError(RESUMED_QUICK)
    if reader is not None and not reader.strip():
        raise click.BadParameter("give trained, base or a reader file's path.", param_hint="--reader")
    given = {**qa_options, **memory_options, **soak_options}
    options = {option: value for option, value in given.items() if value is not None}

    def kept() -> str:
        if name != "soak":
            return "No results were written."
        from bench.soak_run import RunFolder  # no torch: it may be what a Ctrl-C interrupted

        return RunFolder(session.home.data).stop_sentence()

    with _stopped_by_ctrl_c(kept):
        from bench import run_benchmark  # benchmarks sit above the engine: loaded only when asked for

        _, table = run_benchmark(name, out_dir, session.home, session.model, session.device, quick, **options)
    click.echo(table)


@cli.group()
def train() -> None:
    """Train what memory3 learns on top of the model (the model's own weights never change)."""


@train.command("reader")
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path), default=Path("bench/results"), show_default=True
)
@click.option(
    "--reader",
    "reader_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where to write the reader [default: assets/memory-reader.safetensors, the bundled one, for the "
    "default profile; for another: <out>/memory-reader-<profile>.safetensors; with --quick: "
    "<out>/memory-reader.safetensors].",
)
@click.option("--steps", type=click.IntRange(min=1), help="Gradient steps (default 400; --quick: 4).")
@click.option("--quick", is_flag=True, help="Two tuning articles and a few steps: a check that it runs.")
@click.option("--profile", help="The memory profile it learns to read [default: the configured one].")
@click.pass_obj
def train_reader(
    session: Session,
    out_dir: Path,
    reader_path: Path | None,
    steps: int | None,
    quick: bool,
    profile: str | None,
) -> None:
    """Train the memory reader by self-distillation on the QA benchmark's tuning articles (README
    "Memory reader"): write it, its loss curve (<out>/reader-loss.png) and reader.json."""
    with _stopped_by_ctrl_c(lambda: "The reader file is unchanged."):
        from bench import train_reader as run_training  # benchmarks sit above the engine: loaded when asked

        _, table = run_training(
            out_dir, session.home, session.model, session.device, reader_path, quick, steps, profile
        )
    click.echo(table)


@contextlib.contextmanager
def _stopped_by_ctrl_c(kept: Callable[[], str]) -> Iterator[None]:
    """Ctrl-C in a long job run in this process: one sentence saying what is kept (`kept()`, asked then),
    and the shell's status 130 (not click's "Aborted!" and status 1)."""
    try:
        yield
    except KeyboardInterrupt:
        click.echo(f"\nStopped. {kept()}", err=True)
        raise click.exceptions.Exit(INTERRUPTED) from None


def main() -> None:
    """The console script: our errors become one sentence on stderr and exit status 1."""
    try:
        cli(standalone_mode=True)
    except M3Error as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except Exception:  # a bug: the user gets one sentence, the log gets the traceback
        home = Home.from_env()
        log_file = home.log_file
        try:
            home.make_private()
            logging.basicConfig(
                filename=log_file,
                level=logging.INFO,
                format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            )
            logging.getLogger("m3").exception("unexpected error")
            where = f"the details are in {log_file}"
        except OSError:
            where = f"its data folder {log_file.parent.parent} cannot be written either"
        click.echo(f"Error: something went wrong inside memory3; {where}.", err=True)
        sys.exit(2)
