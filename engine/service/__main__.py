"""`python -m engine.service [--model FILE] [--device cpu|cuda]`: run the engine service of the home that
M3_HOME selects (the platform's user folders when unset). This is the only place the service reads the
environment. Logs go to the home's log file, never to the screen; a refusal (another service holds the
folder, a bad config.toml) is one sentence on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from engine.service.errors import M3Error
from ingest.paths import Home

log = logging.getLogger("engine.service")


def _private_data(home: Home) -> None:
    """The data folder holds the user's documents' text and chats: only its owner may read it. Every file
    the service creates is 0600 (umask), and the folder itself 0700."""
    os.umask(0o077)
    home.make_private()


def _setup_logging(home: Home) -> None:
    home.log_file.parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=home.log_file,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s",
    )
    logging.captureWarnings(True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine.service",
        description="Run the memory3 engine service of the home M3_HOME selects (logs in its data folder).",
    )
    parser.add_argument("--model", help="a GGUF model file (default: the bundled Gemma 3 270M)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    args = parser.parse_args(argv)
    home = Home.from_env()
    try:
        _private_data(home)
        _setup_logging(home)
    except OSError as exc:
        print(f"Error: the data folder {home.data} cannot be used ({exc.strerror}).", file=sys.stderr)
        return 1
    from engine.service.server import serve  # the model runtime loads here, after the arguments are fine

    try:
        serve(home, args.model, args.device)
    except M3Error as exc:
        log.error("not serving: %s", exc)
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the data folder turned read-only, a disk filled up
        log.exception("the engine service cannot write its files")
        print(f"Error: the engine service cannot write {exc.filename} ({exc.strerror}).", file=sys.stderr)
        return 1
    except Exception:
        log.exception("the engine service failed")
        print(f"Error: the engine service failed; the details are in {home.log_file}.", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
