"""The `m3` command. Errors reach the user as one sentence and a non-zero exit; logs go to a file."""

from __future__ import annotations

import json
import logging
import sys
import threading
from pathlib import Path

import click

from engine import Engine, M3Error
from ingest.ingester import Progress
from ingest.paths import Home


def _setup_logging(home: Home) -> None:
    home.log_file.parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=home.log_file,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@click.group()
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
    """memory3: chat with your folders through explicit memories."""
    home = Home.from_env()
    _setup_logging(home)
    ctx.obj = Engine.open(home, model_path, device)
    ctx.call_on_close(ctx.obj.close)


@cli.command()
@click.argument("prompt")
@click.option("--max-tokens", default=64, show_default=True, type=click.IntRange(1, 4096))
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(0, 5))
@click.option("--top-p", default=1.0, show_default=True, type=click.FloatRange(0, 1, min_open=True))
@click.option("--seed", default=None, type=int)
@click.pass_obj
def generate(
    engine: Engine, prompt: str, max_tokens: int, temperature: float, top_p: float, seed: int | None
) -> None:
    """Continue PROMPT with the model, streaming the text."""
    pieces = engine.generate(prompt, max_tokens, temperature, top_p, seed)
    click.echo(prompt, nl=False)
    try:
        for piece in pieces:
            click.echo(piece, nl=False)
    except KeyboardInterrupt:
        engine.stop()
    click.echo()


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.pass_obj
def watch(engine: Engine, path: Path) -> None:
    """Add PATH to the watched folders (read at the next `m3 ingest`)."""
    click.echo(f"Watching {engine.add_folder(path).path}")


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.pass_obj
def unwatch(engine: Engine, path: Path) -> None:
    """Stop watching PATH and forget its documents (your files are not touched)."""
    click.echo(f"No longer watching {engine.remove_folder(path).path}")


@cli.command()
@click.pass_obj
def folders(engine: Engine) -> None:
    """The watched folders, one per line."""
    for folder in engine.folders():
        click.echo(str(folder.path))


@cli.command()
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--follow", is_flag=True, help="Keep following changes until Ctrl-C.")
@click.pass_obj
def ingest(engine: Engine, path: Path | None, follow: bool) -> None:
    """Bring the catalog in step with the watched folders (or just PATH, watched first if need be)."""
    if path is not None and path.resolve() not in {f.path for f in engine.folders()}:
        click.echo(f"Watching {engine.add_folder(path).path}")
    report = engine.scan(path, on_progress=_show_progress)
    engine.sync_memories(on_progress=_show_memory_progress)
    click.echo(
        f"\n{report.new} new, {report.changed} changed, {report.moved} moved, {report.deleted} deleted, "
        f"{report.failed} failed."
    )
    for folder in report.missing:
        click.echo(f"Missing folder (kept; is a drive unplugged?): {folder}", err=True)
    for folder, reason in report.unreadable:
        click.echo(f"Could not list {folder}: {reason}", err=True)
    _echo_status(engine)
    if follow:
        stop = threading.Event()
        try:
            engine.watch(stop, on_progress=_show_progress, on_memories=_show_memory_progress)
        except KeyboardInterrupt:
            stop.set()
        click.echo()


@cli.command()
@click.pass_obj
def status(engine: Engine) -> None:
    """Folders, documents, chunks, memory work left, and every document that failed with its reason."""
    _echo_status(engine)


def _show_memory_progress(done: int, total: int) -> None:
    click.echo(f"\rwriting memories: {done}/{total}", nl=False, err=True)


def _show_progress(p: Progress) -> None:
    click.echo(
        f"\r{p.files_parsed + p.files_failed}/{p.files_seen} files read, {p.files_failed} failed, "
        f"{p.chunks} chunks",
        nl=False,
        err=True,
    )


def _echo_status(engine: Engine) -> None:
    s = engine.status()
    p = s.progress
    click.echo(f"Folders: {len(s.folders)}")
    for folder in s.folders:
        click.echo(f"  {folder.path}")
    parsed, pending, failed = p.files_parsed, p.files_pending, p.files_failed
    click.echo(f"Documents: {p.files_seen} ({parsed} parsed, {pending} pending, {failed} failed)")
    click.echo(f"Chunks: {p.chunks} ({p.chunks_pending} waiting for memories, {s.memories_to_drop} to drop)")
    for path, reason in s.failures:
        click.echo(f"  failed: {path}: {reason}")


@cli.command()
@click.argument("question")
@click.option("--mode", type=click.Choice(["memory", "rag", "none"]), default="memory", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of streaming.")
@click.pass_obj
def ask(engine: Engine, question: str, mode: str, as_json: bool) -> None:
    """Answer QUESTION from your documents, then list the numbered sources as path:line."""
    answer = engine.ask(question, mode)
    try:
        for piece in answer:
            if not as_json:
                click.echo(piece, nl=False)
    except KeyboardInterrupt:
        engine.stop()
    citations = [c.as_dict() for c in answer.citations]
    if as_json:
        click.echo(
            json.dumps({"answer": answer.text, "mode": mode, "citations": citations}, ensure_ascii=False)
        )
        return
    click.echo()
    for c in citations:
        page = f" (page {c['page']})" if c["page"] else ""
        click.echo(f"[{c['n']}] {c['path']}:{c['line_start']}-{c['line_end']}{page}  {c['share']:.0%}")


@cli.group()
def bank() -> None:
    """The memory bank."""


@bank.command("stats")
@click.pass_obj
def bank_stats(engine: Engine) -> None:
    """Memories stored, bytes on disk, budget, and memories by profile."""
    for key, value in engine.bank_stats().items():
        click.echo(f"{key}: {value}")


@cli.command()
@click.pass_obj
def doctor(engine: Engine) -> None:
    """Check the model, the embedder, the index and the bank; repair what can be repaired."""
    problems = 0
    for check in engine.doctor():
        click.echo(f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
        problems += not check.ok
    if problems:
        raise SystemExit(1)


@cli.command()
@click.argument("name", type=click.Choice(["engine", "retrieval", "qa"]))
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path), default=Path("bench/results"), show_default=True
)
@click.option("--quick", is_flag=True, help="A small slice: minutes instead of hours (qa: 50 questions).")
@click.option(
    "--sample", type=click.IntRange(min=1), help="qa only: ask a seeded sample of N questions per split."
)
@click.pass_obj
def bench(engine: Engine, name: str, out_dir: Path, quick: bool, sample: int | None) -> None:
    """Run benchmark NAME: print its table and write <out>/NAME.json and NAME.md (qa adds PNG plots)."""
    if sample is not None and name != "qa":
        raise click.UsageError("--sample applies to the qa benchmark only.")
    from bench import run_benchmark  # benchmarks sit above the engine: loaded only when asked for

    options = {"sample": sample} if sample else {}
    _, table = run_benchmark(name, out_dir, engine.home, engine._model_path, engine._device, quick, **options)
    click.echo(table)


def main() -> None:
    """The console script: our errors become one sentence on stderr and exit status 1."""
    try:
        cli(standalone_mode=True)
    except M3Error as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except Exception:  # a bug: the user gets one sentence, the log gets the traceback
        logging.getLogger("m3").exception("unexpected error")
        click.echo(
            f"Error: something went wrong inside memory3; the details are in {Home.from_env().log_file}.",
            err=True,
        )
        sys.exit(2)
