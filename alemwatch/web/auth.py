"""Logging in and out of the web app: the same users, sessions and CSRF tokens as the API."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from alemwatch.api.deps import SESSION_COOKIE, SessionDep, SettingsDep, client_ip
from alemwatch.security import AuthError, authenticate, end_session, start_session
from alemwatch.web import forms
from alemwatch.web.context import FormDep, render_template, safe_next, see_other

router = APIRouter()
HOME = {"patient": "/portal", "admin": "/knowledge"}


def _login_page(request: Request, values: forms.Values, errors: forms.Errors, error: str, status: int) -> HTMLResponse:
    context = {"values": values, "errors": errors, "error": error, "next": safe_next(values.get("next"), "")}
    return render_template(request, "login.html", context, status)


@router.get("/login", name="web_login_form")
def login_form(request: Request, next: str = "") -> HTMLResponse:
    return _login_page(request, {"next": next}, {}, "", 200)


@router.post("/login", name="web_login")
def login(request: Request, values: FormDep, session: SessionDep, settings: SettingsDep) -> Response:
    errors: forms.Errors = {}
    username = forms.text(values, "username", errors, True, 100)
    password = forms.text(values, "password", errors, True, 200)
    if errors or username is None or password is None:
        return _login_page(request, values, errors, "", 422)
    try:
        user = authenticate(session, username, password, client_ip(request), settings)
    except AuthError as exc:
        # Returned, not raised: the failed attempt is committed and counts towards the rate limit.
        return _login_page(request, {"username": username, "next": values.get("next", "")}, {}, str(exc), 401)
    cookie, _ = start_session(session, user, settings)
    home = HOME.get(user.role, "/")
    target = safe_next(values.get("next"), home)
    response = see_other(home if target == "/" else target)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        httponly=True,
        samesite="strict",
        secure=settings.cookie_secure,
        max_age=settings.session_hours * 3600,
    )
    return response


@router.post("/logout", name="web_logout")
def logout(request: Request, session: SessionDep) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        end_session(session, cookie)
    response = see_other("/login")
    response.delete_cookie(SESSION_COOKIE)
    return response
