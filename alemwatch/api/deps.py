"""FastAPI dependencies: settings, the request's transaction, the acting user, access rules.

Routes never commit: the session dependency commits when the route returns and rolls back
when it raises. Every route has an access rule in `alemwatch.api.policy`; a route without
one is refused."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from typing import Annotated, Any

import orjson
from fastapi import Depends, HTTPException, Request, Response
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from alemwatch.api import cds_auth
from alemwatch.api.cds_auth import CdsAuthError
from alemwatch.api.policy import POLICY, Rule
from alemwatch.protocol.load import load_protocol
from alemwatch.protocol.model import Protocol
from alemwatch.security import Actor, actor_for, actor_for_cookie, actor_for_token, user_by_name
from alemwatch.settings import Settings, get_settings
from alemwatch.store import audit
from alemwatch.store.db import session_factory

SESSION_COOKIE = "alemwatch_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


# The dependencies that neither block nor touch the database are `async`: FastAPI runs a
# plain `def` dependency in the thread pool, a hop that costs more than the work itself.


async def settings_dep(request: Request) -> Settings:
    settings: Settings = getattr(request.app.state, "settings", None) or get_settings()
    return settings


SettingsDep = Annotated[Settings, Depends(settings_dep)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    with session_factory(settings.database_url).begin() as session:
        yield session


# scope="function": commit before the response is sent, so an answered write is a stored write.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


async def protocol_dep(settings: SettingsDep) -> Protocol:
    return load_protocol(settings.jurisdiction)  # cached: read once per process


ProtocolDep = Annotated[Protocol, Depends(protocol_dep)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def _identify(request: Request, session: Session, settings: Settings) -> tuple[Actor, str | None] | None:
    """The user behind a bearer token (alemwatch's own, or on /cds-services a CDS client's
    signed JWT: the account it is trusted as) or a session cookie, with the session's CSRF token."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        token = header[7:].strip()
        if request.url.path.startswith("/cds-services/") and cds_auth.looks_like_jwt(token):
            return _cds_client(request, session, settings, token)
        actor = actor_for_token(session, token)
        return (actor, None) if actor else None
    cookie = request.cookies.get(SESSION_COOKIE)
    return actor_for_cookie(session, cookie) if cookie else None


def _cds_client(request: Request, session: Session, settings: Settings, token: str) -> tuple[Actor, None]:
    """The account a CDS client's JWT is trusted as (CdsAuthError when it is not)."""
    base = (settings.public_url or str(request.base_url)).rstrip("/")
    service = request.url.path.removesuffix("/feedback")  # feedback names the service's endpoint too
    verified = cds_auth.verify(token, settings.cds_clients, base + service, settings.cds_fetch_timeout_seconds)
    user = user_by_name(session, verified.account)
    if user is None:
        raise cds_auth.CdsAuthError(f"the account {verified.account!r} of this CDS client is missing or disabled")
    cds_auth.claim_once(session, verified)  # no database error on a replay: the refusal is audited after it
    return actor_for(user, "cds-jwt"), None


def deny(request: Request, session: Session, actor: Actor | None, status: int, message: str) -> HTTPException:
    """Refuse, and record the refusal. Access is decided before the route has written
    anything, so the request's transaction commits just the audit event (the rest of the
    request then rolls back)."""
    who = actor or Actor(None, "anonymous", "anonymous", via="none")
    patient_id = request.path_params.get("patient_id")
    audit.record(
        session, who, request.method.lower(), request.url.path, patient_id, "denied", client_ip(request), status=status
    )
    session.commit()
    return HTTPException(status_code=status, detail=message)


async def authorize(request: Request, settings: SettingsDep) -> Actor | None:
    """Apply the route's access rule: role, own-record scope for patients, CSRF for cookies.

    It runs in a short transaction of its own, before the route's: the route's session then
    touches the database only when the route does (on SQLite a transaction holds the write
    lock, and a route that calls out, such as a CDS service fetching from a FHIR server that
    may be this very server, must not hold it meanwhile)."""
    route = request.scope.get("route")
    rule = POLICY.get(getattr(route, "name", ""))
    form_token = None
    if request.method not in SAFE_METHODS and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        form_token = (await request.form()).get("csrf_token")
    # The database work runs in the thread pool: a blocking call here (SQLite waiting for its
    # write lock) must never stall the event loop that the lock holder needs to finish.
    actor = await run_in_threadpool(_decide_alone, request, settings, rule, form_token)
    request.state.actor = actor
    return actor


def _decide_alone(request: Request, settings: Settings, rule: Rule | None, form_token: object) -> Actor | None:
    with session_factory(settings.database_url).begin() as session:
        return _decide(request, session, rule, form_token, settings)


def _decide(
    request: Request, session: Session, rule: Rule | None, form_token: object, settings: Settings
) -> Actor | None:
    if rule is None:
        raise deny(request, session, None, 403, "no access rule for this route")
    if rule.public:
        return None
    try:
        found = _identify(request, session, settings)
    except CdsAuthError as exc:
        refusal = deny(request, session, None, 401, f"CDS client JWT: {exc}")
        refusal.headers = {"WWW-Authenticate": "Bearer"}
        raise refusal from None
    if found is None:
        refusal = deny(request, session, None, 401, "log in first")
        refusal.headers = {"WWW-Authenticate": "Bearer"}
        raise refusal
    actor, csrf = found
    if actor.role not in rule.roles:
        raise deny(request, session, actor, 403, f"a {actor.role} may not do this")
    if actor.role == "patient" and rule.own_record and request.path_params.get("patient_id") != actor.patient_id:
        raise deny(request, session, actor, 403, "a patient may only see their own record")
    if actor.via == "session" and request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER) or (form_token if isinstance(form_token, str) else None)
        if not sent or sent != csrf:
            raise deny(request, session, actor, 403, "missing or wrong CSRF token")
    return actor


async def current_actor(request: Request) -> Actor:
    actor: Actor | None = getattr(request.state, "actor", None)
    if actor is None:
        raise HTTPException(status_code=401, detail="log in first")
    return actor


ActorDep = Annotated[Actor, Depends(current_actor)]


class _RawJsonRequest(Request):
    """A request whose JSON body is decoded by orjson: a Bundle or an EHR's prefetch of hundreds
    of resources is decoded several times faster than by the standard library, and strictly
    (no NaN, no integer beyond 64 bits: FHIR's JSON has neither). Its `JSONDecodeError` is the
    standard library's, so FastAPI answers malformed JSON as it always does."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class RawJsonRoute(APIRoute):
    """FastAPI's route, with the JSON body decoded by `_RawJsonRequest` (then validated as declared)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def read_raw_json(request: Request) -> Response:
            return await handler(_RawJsonRequest(request.scope, request.receive))

        return read_raw_json
