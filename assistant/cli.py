"""The `m3` command. Errors reach the user as one sentence and a non-zero exit; logs go to a file."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from engine import Engine, M3Error
from ingest.paths import data_dir


def _log_file() -> Path:
    return data_dir() / "logs" / "m3.log"


def _setup_logging() -> None:
    _log_file().parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=_log_file(), level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
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
    ctx.obj = {"model_path": model_path, "device": device}


@cli.command()
@click.argument("prompt")
@click.option("--max-tokens", default=64, show_default=True, type=click.IntRange(1, 4096))
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(0, 5))
@click.option("--top-p", default=1.0, show_default=True, type=click.FloatRange(0, 1, min_open=True))
@click.option("--seed", default=None, type=int)
@click.pass_obj
def generate(
    obj: dict, prompt: str, max_tokens: int, temperature: float, top_p: float, seed: int | None
) -> None:
    """Continue PROMPT with the model, streaming the text."""
    engine = Engine.open(obj["model_path"], obj["device"])
    pieces = engine.generate(prompt, max_tokens, temperature, top_p, seed)
    click.echo(prompt, nl=False)
    try:
        for piece in pieces:
            click.echo(piece, nl=False)
    except KeyboardInterrupt:
        engine.stop()
    click.echo()


@cli.group()
def bench() -> None:
    """Benchmarks; each prints a table and writes bench/results/<name>.json."""


@bench.command("engine")
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path), default=Path("bench/results"), show_default=True
)
@click.pass_obj
def bench_engine(obj: dict, out_dir: Path) -> None:
    """Prefill/decode speed against llama.cpp, memory writing, bytes per memory, time to first token."""
    _, table = Engine.benchmark("engine", out_dir, obj["model_path"], obj["device"])
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
        click.echo(f"Error: something went wrong inside memory3; the details are in {_log_file()}.", err=True)
        sys.exit(2)
