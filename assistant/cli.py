"""The `m3` command. Errors reach the user as one sentence and a non-zero exit; logs go to a file."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

import click

from engine import Engine, M3Error


def _setup_logging() -> None:
    Engine.log_file().parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=Engine.log_file(),
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
    _setup_logging()
    ctx.obj = Engine(model_path, device)


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


@cli.group()
def folders() -> None:
    """The folders memory3 watches."""


@folders.command("add")
@click.argument("path", type=click.Path(path_type=Path))
@click.pass_obj
def folders_add(engine: Engine, path: Path) -> None:
    """Watch PATH (its files are read at the next scan or watch)."""
    click.echo(f"Watching {engine.add_folder(path).path}")


@folders.command("remove")
@click.argument("path", type=click.Path(path_type=Path))
@click.pass_obj
def folders_remove(engine: Engine, path: Path) -> None:
    """Stop watching PATH and forget its documents (your files are not touched)."""
    click.echo(f"No longer watching {engine.remove_folder(path).path}")


@folders.command("list")
@click.pass_obj
def folders_list(engine: Engine) -> None:
    """The watched folders, one per line."""
    for folder in engine.folders():
        click.echo(str(folder.path))


@cli.command()
@click.pass_obj
def scan(engine: Engine) -> None:
    """Bring the catalog in step with the watched folders: find new, changed, moved and deleted files."""
    report = engine.scan()
    click.echo(
        f"{report.new} new, {report.changed} changed, {report.moved} moved, {report.deleted} deleted, "
        f"{report.failed} failed."
    )
    for folder in report.missing:
        click.echo(f"Missing folder (kept; is a drive unplugged?): {folder}", err=True)
    for folder, reason in report.unreadable:
        click.echo(f"Could not list {folder}: {reason}", err=True)
    _echo_status(engine)


@cli.command()
@click.pass_obj
def status(engine: Engine) -> None:
    """Folders, documents, chunks, memory work left, and every document that failed with its reason."""
    _echo_status(engine)


@cli.command()
@click.pass_obj
def watch(engine: Engine) -> None:
    """Follow the watched folders until Ctrl-C, keeping the catalog in step."""
    stop = threading.Event()

    def show(p) -> None:
        click.echo(
            f"\r{p.files_parsed}/{p.files_seen} files parsed, {p.files_failed} failed, "
            f"{p.chunks_pending} chunks waiting for memories",
            nl=False,
        )

    try:
        engine.watch(stop, on_progress=show)
    except KeyboardInterrupt:
        stop.set()
    click.echo()


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


@cli.group()
def bench() -> None:
    """Benchmarks; each prints a table and writes bench/results/<name>.json."""


@bench.command("engine")
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path), default=Path("bench/results"), show_default=True
)
@click.pass_obj
def bench_engine(engine: Engine, out_dir: Path) -> None:
    """Prefill/decode speed against llama.cpp, memory writing, bytes per memory, time to first token."""
    _, table = engine.benchmark("engine", out_dir)
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
            f"Error: something went wrong inside memory3; the details are in {Engine.log_file()}.", err=True
        )
        sys.exit(2)
