"""The memory bank endpoints of docs/api.md: its statistics, export to a bank file, inspection and import
of one (streams of progress, cancelled by hanging up), and the removal of an imported collection."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.bankfile.importer import Inspection
from engine.service import events, protocol
from engine.service.errors import ConflictError
from engine.service.web import read_body, reply, service_of

Emit = Callable[[events.Event], None]


def _report(found: Inspection) -> events.BankReport:
    return events.BankReport(
        manifest=msgspec.to_builtins(found.manifest),
        verdict=msgspec.convert(found.verdict, events.Verdict, from_attributes=True),
        plan=msgspec.convert(found.plan, events.Plan, from_attributes=True),
        file_bytes=found.file_bytes,
        imported=found.imported,
        pending=found.pending,
    )


def _progress(emit: Emit) -> Callable[[str, int, int], None]:
    return lambda stage, done, total: emit(events.BankProgress(stage, done, total))


async def bank_stats(request: Request) -> Response:
    engine = service_of(request).ready()
    return reply(await to_thread.run_sync(engine.bank_stats))


async def export(request: Request) -> Response:
    service = service_of(request)
    engine = service.ready()
    body = await read_body(request, protocol.ExportRequest)
    target = Path(body.path)
    if (target.is_file() or target.is_symlink()) and not body.replace:
        raise ConflictError(f"{target} exists; replace it explicitly (m3 bank export --force).")
    cancel = threading.Event()
    scope = (body.folder, body.collection, body.documents)

    def produce(emit: Emit) -> None:
        done = engine.export_bank(target, *scope, body.vectors, _progress(emit), cancel)
        emit(
            events.Exported(
                str(done.path),
                done.documents,
                done.chunks,
                done.memories,
                done.vectors,
                done.bytes,
                done.skipped,
            )
        )

    return service.streams.response(produce, cancel)


def _reading(check_only: bool) -> Callable[[Request], Awaitable[Response]]:
    """The inspect endpoint (`check_only`) and the import endpoint (a check only with `dry_run`)."""

    async def endpoint(request: Request) -> Response:
        service = service_of(request)
        engine = service.ready()
        body = await read_body(request, protocol.BankFileRequest)
        run = engine.inspect_bank if check_only or body.dry_run else engine.import_bank
        cancel = threading.Event()

        def produce(emit: Emit) -> None:
            emit(_report(run(body.path, _progress(emit), cancel)))

        return service.streams.response(produce, cancel)

    return endpoint


async def remove_collection(request: Request) -> Response:
    engine = service_of(request).ready()
    folder = await to_thread.run_sync(engine.remove_collection, request.path_params["label"])
    return reply({"id": folder.id, "path": str(folder.path)})


ROUTES = [
    Route("/v1/bank/stats", bank_stats, methods=["GET"]),
    Route("/v1/bank/export", export, methods=["POST"]),
    Route("/v1/bank/inspect", _reading(check_only=True), methods=["POST"]),
    Route("/v1/bank/import", _reading(check_only=False), methods=["POST"]),
    Route("/v1/collections/{label:path}", remove_collection, methods=["DELETE"]),
]
