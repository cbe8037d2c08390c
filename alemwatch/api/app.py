"""The HTTP application: the registry's REST API (OpenAPI at /docs).

One place turns errors into responses: a bad field is a 4xx naming it, never a 500. The
application refuses to start on a database that is not migrated."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alemwatch import __version__
from alemwatch.api import cds, fhir
from alemwatch.api.deps import authorize
from alemwatch.api.guard import RequestGuard
from alemwatch.api.routes import router
from alemwatch.core.findings import triage_engine
from alemwatch.core.patient import PatientFileError
from alemwatch.fhir.inbound import FhirInputError, FhirIssue
from alemwatch.protocol.load import load_protocol
from alemwatch.registry.alerts import AlertStateError
from alemwatch.settings import Settings, get_settings
from alemwatch.store.db import NotMigrated, ensure_migrated
from alemwatch.store.repo import Conflict
from alemwatch.web import STATIC_DIR, install_error_pages
from alemwatch.web import router as web_router

log = logging.getLogger("alemwatch")


def _field_error(status: int, field: str, message: str) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"detail": [{"loc": field.split("."), "field": field, "msg": message}]}
    )


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PatientFileError)
    async def patient_file_error(request: Request, exc: PatientFileError) -> JSONResponse:
        return _field_error(422, exc.field, exc.problem)

    @app.exception_handler(FhirInputError)
    async def fhir_input_error(request: Request, exc: FhirInputError) -> JSONResponse:
        return fhir.outcome_response(exc.status, exc.issues)

    @app.exception_handler(RequestValidationError)
    async def request_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        if is_fhir(request):
            return fhir.outcome_response(400, [_fhir_issue(e) for e in exc.errors()])
        errors = [
            {
                "loc": list(e["loc"]),
                "field": ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]),
                "msg": e["msg"],
            }
            for e in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": errors})

    @app.exception_handler(Conflict)
    async def conflict(request: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(exc)})

    @app.exception_handler(AlertStateError)
    async def alert_state(request: Request, exc: AlertStateError) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(exc)})

    @app.exception_handler(NotMigrated)
    async def not_migrated(request: Request, exc: NotMigrated) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(exc)})


def is_fhir(request: Request) -> bool:
    return request.url.path == "/fhir" or request.url.path.startswith("/fhir/")


def _fhir_issue(error: Any) -> FhirIssue:
    """A request that FastAPI could not read (malformed JSON, a bad parameter) as an issue."""
    if error.get("type") == "json_invalid":
        where = error.get("ctx", {}).get("error", "")
        return FhirIssue("structure", f"malformed JSON: {where}".rstrip(": "), "Bundle")
    field = ".".join(str(p) for p in error["loc"][1:]) or str(error["loc"][0])
    return FhirIssue("invalid", str(error["msg"]), field)


class RequestLog:
    """One log line per request with the route's template, never its patient ids or bodies.
    Plain ASGI (not `@app.middleware`): no extra task per request, and a client that goes
    away before the answer is logged as such, not as an error."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: int | None = None

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = getattr(scope.get("route"), "path", "(unmatched)")
            said = status if status is not None else "(no answer)"
            log.info("%s %s %s %.1f ms", scope["method"], path, said, (time.perf_counter() - started) * 1000)


# A request decodes tens of thousands of objects (a Bundle, an EHR's prefetch) that all stay
# alive until it ends: with the default 700 the collector scans them again and again while
# they are built. 10,000 allocations between young collections (measured on a CDS call with
# 337 Observations: 10.3 -> 9.4 ms of CPU); cycles are still collected, a little later.
GC_YOUNG_THRESHOLD = 10_000


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ensure_migrated(settings.database_url)  # refuse to serve an unmigrated database
        triage_engine(load_protocol(settings.jurisdiction)).warm()
        # What start-up made (the protocol, the FHIR models, the routes) lives as long as the
        # process: kept out of the collector's passes, a request's garbage is collected at the
        # cost of what it made, not of the whole heap (an EHR's prefetch is many small objects).
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        yield

    app = FastAPI(
        title="alemwatch",
        version=__version__,
        description="Registry and safety programme for alemtuzumab (Lemtrada): patients, assessments, alerts.",
        dependencies=[Depends(authorize)],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.include_router(router)
    app.include_router(fhir.router)
    app.include_router(cds.router)
    app.include_router(web_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _install_error_handlers(app)
    install_error_pages(app)  # web pages: log-in redirect and HTML error pages; the API keeps JSON
    app.add_middleware(RequestGuard, max_bytes=settings.max_body_bytes)  # outermost: sees raw bytes
    app.add_middleware(RequestLog)  # outermost: times everything
    return app


def app_from_env() -> FastAPI:
    """Entry point for `uvicorn --factory alemwatch.api.app:app_from_env`."""
    return create_app()


__all__ = ["create_app", "app_from_env", "NotMigrated"]
