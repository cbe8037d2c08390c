"""SMART on FHIR EHR launch: the EHR opens `/smart/launch?iss=...&launch=...`, alemwatch asks
the EHR's authorization server for the launch context (OAuth 2 authorization code with PKCE),
and the clinician lands on the patient's page without searching.

The clinician signs in to alemwatch as usual (a launch without a session goes through the
log-in page and comes back); the EHR only says *which patient*. Only the EHRs listed in
ALEMWATCH_SMART_ISSUERS may launch (the server fetches their configuration: no open fetches,
no open redirects). The state travels in a signed, short-lived cookie."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from fastapi import APIRouter, HTTPException
from fastapi.responses import RedirectResponse, Response

from alemwatch.store import models as m
from alemwatch.web.context import CtxDep, see_other

router = APIRouter(prefix="/smart")
STATE_COOKIE = "alemwatch_smart"
STATE_SECONDS = 600
SCOPES = "launch openid fhirUser patient/*.read"


def _sign(secret: str, payload: dict[str, Any]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()
    mac = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    return f"{body}.{mac}"


def _unsign(secret: str, value: str | None) -> dict[str, Any] | None:
    if not value or "." not in value:
        return None
    body, mac = value.rsplit(".", 1)
    expected = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(mac, expected):
        return None
    try:
        payload: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body.encode()))
    except ValueError:
        return None
    return payload if payload.get("expires", 0) > time.time() else None


def _refuse(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def _bad(field: str, message: str) -> HTTPException:
    """A launch parameter that cannot be used: 422 naming it, like any bad query parameter."""
    return HTTPException(status_code=422, detail=[{"loc": ["query", field], "field": field, "msg": message}])


def _configuration(iss: str, timeout: float) -> dict[str, Any]:
    """The EHR's SMART configuration (`.well-known/smart-configuration`)."""
    try:
        answer = httpx.get(f"{iss.rstrip('/')}/.well-known/smart-configuration", timeout=timeout)
        answer.raise_for_status()
        document: dict[str, Any] = answer.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise _refuse(502, f"the EHR's SMART configuration could not be read ({type(exc).__name__})") from None
    for key in ("authorization_endpoint", "token_endpoint"):
        if not isinstance(document.get(key), str) or not document[key].startswith(("https://", "http://")):
            raise _refuse(502, f"the EHR's SMART configuration has no {key}")
    return document


def _redirect_uri(ctx: Any) -> str:
    return str(ctx.request.base_url).rstrip("/") + "/smart/callback"


@router.get("/launch", name="web_smart_launch")
def launch(ctx: CtxDep, iss: str = "", launch: str = "") -> Response:
    """Start an EHR launch: send the browser to the EHR's authorization endpoint."""
    settings = ctx.settings
    if not iss or len(iss) > 500:
        raise _bad("iss", "the EHR's FHIR base URL is required")
    if iss.rstrip("/") not in {s.rstrip("/") for s in settings.smart_issuers}:
        raise _bad("iss", "this EHR may not launch alemwatch (see ALEMWATCH_SMART_ISSUERS)")
    if not launch or len(launch) > 2000:
        raise _bad("launch", "the EHR's launch token is required")
    configuration = _configuration(iss, settings.cds_fetch_timeout_seconds)
    state, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    query = {
        "response_type": "code",
        "client_id": settings.smart_client_id,
        "redirect_uri": _redirect_uri(ctx),
        "launch": launch,
        "scope": SCOPES,
        "state": state,
        "aud": iss,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    cookie = _sign(
        settings.secret_key,
        {
            "state": state,
            "verifier": verifier,
            "iss": iss,
            "token_endpoint": configuration["token_endpoint"],
            "user": ctx.actor.user_id,
            "expires": time.time() + STATE_SECONDS,
        },
    )
    ctx.audit("smart_launch", "/smart/launch", None, iss=iss)
    response = RedirectResponse(f"{configuration['authorization_endpoint']}?{urlencode(query)}", status_code=302)
    response.set_cookie(
        STATE_COOKIE, cookie, max_age=STATE_SECONDS, httponly=True, samesite="lax", secure=settings.cookie_secure
    )
    return response


@router.get("/callback", name="web_smart_callback")
def callback(ctx: CtxDep, code: str = "", state: str = "", error: str = "") -> Response:
    """The EHR sends the browser back: exchange the code for the launch context, open the patient."""
    if error:
        raise _bad("error", f"the EHR refused the launch: {error[:200]}")
    saved = _unsign(ctx.settings.secret_key, ctx.request.cookies.get(STATE_COOKIE))
    if saved is None or not state or not hmac.compare_digest(saved["state"], state):
        raise _bad("state", "this launch is unknown or expired; launch again from the EHR")
    if saved.get("user") != ctx.actor.user_id:
        raise _refuse(403, "this launch was started by another user")
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": _redirect_uri(ctx),
        "client_id": ctx.settings.smart_client_id,
        "code_verifier": saved["verifier"],
    }
    try:
        answer = httpx.post(saved["token_endpoint"], data=form, timeout=ctx.settings.cds_fetch_timeout_seconds)
        answer.raise_for_status()
        token: dict[str, Any] = answer.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise _refuse(502, f"the EHR's token endpoint refused the code ({type(exc).__name__})") from None
    patient_id = token.get("patient")
    if not isinstance(patient_id, str) or not patient_id:
        raise _refuse(400, "the EHR's launch context names no patient")
    if ctx.session.get(m.Patient, patient_id) is None:
        # Kept although the answer is an error (the request's transaction then rolls back).
        ctx.audit("smart_launch", "/smart/callback", None, iss=saved["iss"], outcome="not-found")
        ctx.session.commit()
        raise _refuse(404, f"the EHR's patient {patient_id} is not in this registry")
    ctx.audit("smart_launch", "/smart/callback", patient_id, iss=saved["iss"])
    response = see_other(f"/patients/{quote(patient_id, safe='')}")
    response.delete_cookie(STATE_COOKIE)
    return response
