"""An ASGI guard in front of the application: bodies are counted as they arrive (a chunked
body cannot slip past the size limit), and a NUL character anywhere in the path, query or
body is refused (PostgreSQL text cannot hold it, and no clinical text needs it)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

NUL_MARKS = (b"\x00", b"\\u0000", b"%00")


class RequestGuard:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path = scope.get("raw_path") or scope["path"].encode()
        fhir = scope["path"] == "/fhir" or scope["path"].startswith("/fhir/")
        if any(mark in raw_path for mark in NUL_MARKS):
            await _answer(send, 422, "a NUL character is not allowed in the address", "path", fhir)
            return
        query = scope.get("query_string", b"")
        if any(mark in query for mark in NUL_MARKS):
            await _answer(send, 422, "a NUL character is not allowed", _form_field(query), fhir)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                refusal = f"body larger than {self.max_bytes} bytes"
                if fhir:
                    await _answer_outcome(send, 413, "too-costly", refusal)
                else:
                    await _answer(send, 413, refusal)
                return
        if _is_form(scope) and any(mark in body for mark in NUL_MARKS):
            await _answer(send, 422, "a NUL character is not allowed", _form_field(bytes(body)), fhir)
            return
        if any(mark in body for mark in NUL_MARKS[:2]):
            await _answer(send, 422, "a NUL character is not allowed", _json_field(bytes(body)), fhir)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


def _is_form(scope: Scope) -> bool:
    headers: dict[bytes, bytes] = dict(scope.get("headers", []))
    return headers.get(b"content-type", b"").startswith(b"application/x-www-form-urlencoded")


def _form_field(encoded: bytes) -> str:
    """The first form or query field whose name or value holds a NUL."""
    for key, value in parse_qsl(encoded.decode("latin-1"), keep_blank_values=True):
        if "\x00" in key or "\x00" in value:
            return key.replace("\x00", "")
    return "query"


def _json_field(body: bytes) -> str:
    """The path (`labs[0].unit`) of the first JSON string holding a NUL."""
    try:
        document = json.loads(body)
    except ValueError:
        return "body"

    def find(value: Any, path: str) -> str | None:
        if isinstance(value, str):
            return path if "\x00" in value else None
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, child in items:
            where = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return where
            found = find(child, where)
            if found:
                return found
        return None

    return find(document, "") or "body"


async def _answer(send: Send, status: int, detail: str, field: str | None = None, fhir: bool = False) -> None:
    if fhir:
        await _answer_outcome(send, status, "invalid", f"{field}: {detail}" if field else detail, field or "Bundle")
        return
    content: Any = (
        {"detail": [{"loc": field.split("."), "field": field, "msg": detail}]} if field else {"detail": detail}
    )
    payload: Any = json.dumps(content).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": payload})


async def _answer_outcome(send: Send, status: int, code: str, detail: str, where: str = "Bundle") -> None:
    """The same refusal on the FHIR endpoint, as an OperationOutcome."""
    issue = {"severity": "error", "code": code, "diagnostics": detail, "expression": [where]}
    payload = json.dumps({"resourceType": "OperationOutcome", "issue": [issue]}).encode()
    headers = [(b"content-type", b"application/fhir+json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
