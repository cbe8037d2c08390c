"""What every page handler needs, as one dependency: the transaction, the protocol, the acting
user with their CSRF token, today's date, and the two things every handler does with them —
audit an access and render a template."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from alemwatch.api.deps import SESSION_COOKIE, ActorDep, ProtocolDep, SessionDep, SettingsDep, client_ip
from alemwatch.protocol.model import Protocol
from alemwatch.security import Actor, actor_for_cookie
from alemwatch.settings import Settings
from alemwatch.store import audit
from alemwatch.web import present

TEMPLATES_DIR = Path(__file__).with_name("templates")
STATIC_DIR = Path(__file__).with_name("static")

# Pages only load what this server serves; no inline script, no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages carry patient data
}

templates = Jinja2Templates(directory=TEMPLATES_DIR)
templates.env.filters.update(present.FILTERS)
templates.env.globals.update(present.GLOBALS)


def render_template(
    request: Request, name: str, context: dict[str, Any], status: int = 200, actor: Actor | None = None
) -> HTMLResponse:
    base = {"actor": actor, "csrf_token": None, "htmx": request.headers.get("hx-request") == "true"}
    response = templates.TemplateResponse(request, name, {**base, **context}, status_code=status)
    response.headers.update(SECURITY_HEADERS)
    return response


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def login_url(next_path: str) -> str:
    return "/login?next=" + quote(next_path, safe="/")


def safe_next(value: str | None, default: str) -> str:
    """A local path to go on to after a form; anything else (another site, `//host`) is refused."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return default


@dataclass
class Ctx:
    request: Request
    session: Session
    protocol: Protocol
    settings: Settings
    actor: Actor
    csrf_token: str | None
    today: dt.date

    def audit(self, action: str, resource: str, patient_id: str | None = None, **detail: Any) -> None:
        audit.record(self.session, self.actor, action, resource, patient_id, ip=client_ip(self.request), **detail)

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context = {"csrf_token": self.csrf_token, "today": self.today, "protocol": self.protocol, **context}
        return render_template(self.request, name, context, status, self.actor)

    @property
    def is_htmx(self) -> bool:
        return self.request.headers.get("hx-request") == "true"


def web_context(
    request: Request, session: SessionDep, protocol: ProtocolDep, settings: SettingsDep, actor: ActorDep
) -> Ctx:
    csrf = None
    cookie = request.cookies.get(SESSION_COOKIE)
    if actor.via == "session" and cookie:
        found = actor_for_cookie(session, cookie)
        csrf = found[1] if found else None
    return Ctx(request, session, protocol, settings, actor, csrf, dt.date.today())


CtxDep = Annotated[Ctx, Depends(web_context)]


async def form_values(request: Request) -> dict[str, str]:
    """The submitted form's text fields (empty for a request that is not a form)."""
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}


FormDep = Annotated[dict[str, str], Depends(form_values)]
