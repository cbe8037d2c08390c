"""The web pages without a browser: access (redirect for pages, 401 for the API), CSRF, security
headers, the calendar, and the presentation helpers. The browser tests are in tests/e2e/."""

from __future__ import annotations

import datetime as dt
import re

from fastapi.testclient import TestClient
from icalendar import Calendar

from alemwatch.core.chart import Chart, add_months
from alemwatch.core.patient import parse_patient
from alemwatch.protocol.load import load_protocol
from alemwatch.store import models as m
from alemwatch.store.db import session_factory
from alemwatch.web import charts, forms, present
from tests.conftest import PASSWORD, make_user

HTML = {"accept": "text/html"}
TODAY = dt.date.today()


def _patient(patient_id: str) -> dict[str, object]:
    last = add_months(TODAY, -2)
    return {
        "id": patient_id,
        "sex": "female",
        "infusions": [{"date": (last - dt.timedelta(days=n)).isoformat(), "premedication": True} for n in range(5)],
        "labs": [{"test": "platelets", "value": 18, "unit": "10*9/L", "date": TODAY.isoformat()}],
    }


def _login(client: TestClient, username: str) -> str:
    response = client.post("/login", data={"username": username, "password": PASSWORD}, follow_redirects=False)
    assert response.status_code == 303, response.text
    page = client.get("/knowledge", headers=HTML)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, "every page with a form carries the session's CSRF token"
    return match.group(1)


def test_pages_send_browsers_to_the_login_page_and_the_api_keeps_401(app_client: TestClient) -> None:
    page = app_client.get("/patients", headers=HTML, follow_redirects=False)
    assert (page.status_code, page.headers["location"]) == (303, "/login?next=/patients")
    assert app_client.get("/patients").status_code == 401  # no HTML asked for: the API's answer
    assert app_client.get("/api/patients", headers=HTML).status_code == 401


def test_a_login_starts_a_session_and_forms_need_its_csrf_token(app_client: TestClient, db_url: str) -> None:
    make_user(db_url, "nurse-w", "nurse")
    wrong = app_client.post("/login", data={"username": "nurse-w", "password": "not the password"}, headers=HTML)
    assert wrong.status_code == 401 and "wrong username or password" in wrong.text
    csrf = _login(app_client, "nurse-w")
    form = {"id": "web-1", "sex": "female", "hiv": "negative", "tuberculosis": "unknown"}
    refused = app_client.post("/patients/new", data=form, headers=HTML)
    assert refused.status_code == 403 and "You may not open this page" in refused.text
    created = app_client.post("/patients/new", data={**form, "csrf_token": csrf}, follow_redirects=False)
    assert (created.status_code, created.headers["location"]) == (303, "/patients/web-1?saved=patient")
    with session_factory(db_url)() as session:
        assert session.get(m.Patient, "web-1") is not None
        events = session.query(m.AuditEvent).filter_by(patient_id="web-1", action="create").count()
    assert events == 1


def test_pages_carry_security_headers_and_a_missing_patient_is_a_page(app_client: TestClient, db_url: str) -> None:
    make_user(db_url, "clin-w", "clinician")
    _login(app_client, "clin-w")
    page = app_client.get("/patients/nobody", headers=HTML)
    assert page.status_code == 404 and "There is nothing here" in page.text
    today = app_client.get("/", headers=HTML)
    assert "script-src 'self'" in today.headers["content-security-policy"]
    assert today.headers["cache-control"] == "no-store"
    assert "cdn" not in today.text.lower() and "https://" not in today.text


def test_the_schedule_is_an_importable_calendar(app_client: TestClient, db_url: str) -> None:
    make_user(db_url, "nurse-c", "nurse")
    csrf = _login(app_client, "nurse-c")
    token = {"csrf_token": csrf}
    assert (
        app_client.post(
            "/patients/new",
            data={**token, "id": "cal-1", "sex": "female", "hiv": "negative", "tuberculosis": "negative"},
        ).status_code
        == 200
    )
    infusion = {
        **token,
        "date": add_months(TODAY, -1).isoformat(),
        "premedication": "yes",
        "infusion_end": "10:00",
        "observation_end": "12:00",
    }
    assert app_client.post("/patients/cal-1/infusions", data=infusion).status_code == 200
    response = app_client.get("/patients/cal-1/schedule.ics")
    assert response.headers["content-type"].startswith("text/calendar")
    events = Calendar.from_ical(response.content).walk("VEVENT")
    assert events and all(event.decoded("dtstart") >= TODAY - dt.timedelta(days=31) for event in events)


def test_trend_charts_draw_the_protocols_thresholds() -> None:
    protocol = load_protocol("us")
    chart = Chart.build(parse_patient(_patient("chart-1"), protocol), protocol, TODAY)
    platelets = {t.value: t.severity for t in charts.thresholds(chart, "platelets")}
    assert platelets == {30: "urgent", 100: "urgent"}
    assert {t.value for t in charts.thresholds(chart, "cd4")} == {protocol.prophylaxis.herpes.cd4_threshold}
    assert {t.value for t in charts.thresholds(chart, "alt")} == {120, 200}  # 3 and 5 x the default ULN 40
    trend = charts.trend_chart(chart, "platelets")
    assert trend.points[-1].flag == "low" and "latest 18" in trend.summary
    assert [charts.nice_step(x) for x in (4.6, 230, 517)] == [2, 100, 200]


def test_form_errors_name_the_form_field() -> None:
    assert forms.field_of("labs[0].unit", ("test", "unit"), "value") == "unit"
    assert forms.field_of("screening.hiv", ("id", "hiv"), "id") == "hiv"
    assert (
        forms.field_of(
            "infusions[0].observation_minutes", ("observation_end",), "date", {"observation_minutes": "observation_end"}
        )
        == "observation_end"
    )
    item, errors = forms.parse_lab({"test": "tsh", "value": "2,5", "unit": "mIU/L", "date": "2999-01-01"}, TODAY)
    assert item["value"] == 2.5 and errors == {"date": "Cannot be in the future."}


def test_the_catalogue_search_matches_every_word() -> None:
    effects = load_protocol("us").adverse_effects
    assert [e.id for e in present.search_effects(effects, "bleeding gums")] == ["ae.itp"]
    assert present.search_effects(effects, "") == effects
