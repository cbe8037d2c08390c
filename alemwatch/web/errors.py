"""Errors on web pages: a browser that is not logged in is sent to the login page, and a
refusal or a missing record is a page a person can read. API clients (and anything that does
not ask for HTML) keep the JSON answers of the REST API."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from alemwatch.web.context import login_url, render_template, see_other

MESSAGES = {
    403: "You may not open this page.",
    404: "There is nothing here.",
    409: "This cannot be done now.",
}


FHIR_ISSUE_CODES = {401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported", 409: "conflict"}


def fhir_http_error(exc: StarletteHTTPException) -> Response:
    """A refusal on the FHIR endpoint as an OperationOutcome."""
    from alemwatch.api.fhir import outcome_response
    from alemwatch.fhir.inbound import FhirIssue

    code = FHIR_ISSUE_CODES.get(exc.status_code, "processing")
    issue = FhirIssue(code, str(exc.detail), "request")
    return outcome_response(exc.status_code, [issue], headers=dict(exc.headers or {}))


def is_page_request(request: Request) -> bool:
    """A request to a web route from a browser (or from HTMX on a web page)."""
    route_name = getattr(request.scope.get("route"), "name", "") or ""
    wants_html = "text/html" in request.headers.get("accept", "") or request.headers.get("hx-request") == "true"
    return route_name.startswith("web_") and wants_html


def page_for_error(request: Request, status: int, detail: str) -> Response:
    if status == 401:
        target = login_url(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        if request.headers.get("hx-request") == "true":
            return Response(status_code=401, headers={"HX-Redirect": target})
        return see_other(target)
    title = MESSAGES.get(status, "Something went wrong.")
    return render_template(request, "error.html", {"status": status, "title": title, "detail": detail}, status)


def install_error_pages(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if is_page_request(request):
            return page_for_error(request, exc.status_code, str(exc.detail))
        if request.url.path == "/fhir" or request.url.path.startswith("/fhir/"):
            return fhir_http_error(exc)
        return await http_exception_handler(request, exc)
