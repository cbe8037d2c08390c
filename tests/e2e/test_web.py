"""The web app in a real browser against the live server, on SQLite and on PostgreSQL.

Each test seeds its own patients (ids prefixed by the test), so the tests share one server per
backend and assert only about their own rows; screenshots of every main page go to artifacts/,
and each main page passes axe-core with no serious or critical violation."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from icalendar import Calendar
from pypdf import PdfReader
from sqlalchemy import select

from alemwatch.store import models as m
from alemwatch.store.db import session_factory
from tests.e2e.conftest import (
    PHONE,
    TODAY,
    LiveServer,
    assert_accessible,
    login,
    months_ago,
    patient_file,
    screenshot,
    seed,
)

RED_FLAG = "sudden worst headache and my arm is weak"


def lab(test: str, value: float, unit: str, day: dt.date, **extra: Any) -> dict[str, Any]:
    return {"test": test, "value": value, "unit": unit, "date": day.isoformat(), **extra}


def alerts(server: LiveServer, patient_id: str) -> list[m.Alert]:
    with session_factory(server.db_url)() as session:
        return list(session.execute(select(m.Alert).where(m.Alert.patient_id == patient_id)).scalars())


def audited(server: LiveServer, patient_id: str, action: str) -> int:
    with session_factory(server.db_url)() as session:
        query = select(m.AuditEvent).where(m.AuditEvent.patient_id == patient_id, m.AuditEvent.action == action)
        return len(list(session.execute(query).scalars()))


def worklist_patients(page: Any, section: str) -> list[str]:
    return page.locator(f"section:has(#{section}) a[href^='/patients/']").all_inner_texts()


# --- Today -----------------------------------------------------------------------------------------


def test_today_is_ordered_by_urgency_and_links_to_patients(server: LiveServer, new_page: Any) -> None:
    seed(
        server,
        patient_file(
            "today-stroke",
            TODAY - dt.timedelta(days=1),
            symptoms=[{"date": TODAY.isoformat(), "text": RED_FLAG}],
        ),
        patient_file("today-itp", months_ago(5), labs=[lab("platelets", 25, "10*9/L", TODAY - dt.timedelta(days=2))]),
        patient_file("today-overdue", months_ago(4)),
        patient_file(
            "today-cd4",
            months_ago(3),
            labs=[lab("cd4", 260, "/uL", TODAY - dt.timedelta(days=5)), lab("platelets", 210, "10*9/L", TODAY)],
        ),
        patient_file("today-course", months_ago(13), planned_course_start=(TODAY + dt.timedelta(days=30)).isoformat()),
    )
    page = new_page()
    page.goto(server.url("/"))
    assert "/login" in page.url, "a page asked for without logging in goes to the login page"
    login(page, server, server.nurse)
    assert page.url.rstrip("/") == server.base

    headings = page.locator("main h2").all_inner_texts()
    order = ["Call first", "Overdue tests", "Tests due this week", "Prophylaxis", "Planned courses", "Other"]
    positions = [next(i for i, h in enumerate(headings) if word in h) for word in order]
    assert positions == sorted(positions), headings

    rows = page.locator("#call-first ~ ol > li")
    severities = [
        re.sub(r"[^A-Z]", "", t)
        for t in rows.locator(".badge.urgency-emergency, .badge.urgency-urgent").all_inner_texts()
    ]
    assert severities == sorted(severities, key=lambda s: s != "EMERGENCY"), "emergencies come before urgent findings"
    called = worklist_patients(page, "call-first")
    assert called.index("today-stroke") < called.index("today-itp")
    assert "today-overdue" in worklist_patients(page, "overdue")
    prophylaxis = page.locator("section:has(#prophylaxis) li", has_text="today-cd4")
    assert "may stop herpes prophylaxis" in prophylaxis.inner_text()
    assert "today-course" in worklist_patients(page, "courses")

    screenshot(page, server, "today")
    assert_accessible(page, "today")
    page.locator("#call-first ~ ol").get_by_role("link", name="today-stroke").click()
    page.wait_for_url("**/patients/today-stroke")
    assert page.get_by_role("heading", level=1).inner_text() == "Patient today-stroke"
    assert audited(server, "today-stroke", "read") >= 1


# --- the patient: a platelet count of 18 -------------------------------------------------------------


def test_platelet_count_of_18_raises_an_urgent_itp_alert_that_is_acknowledged(
    server: LiveServer, new_page: Any
) -> None:
    seed(server, patient_file("itp-18", months_ago(4), labs=[lab("platelets", 230, "10*9/L", months_ago(1))]))
    page = new_page()
    login(page, server, server.nurse)
    page.goto(server.url("/patients/itp-18"))
    assert page.locator("#alerts ~ article.severity-urgent").count() == 0

    page.get_by_role("link", name="Lab result").click()
    page.get_by_label("Test").select_option("platelets")
    page.get_by_label("Value").fill("18")
    page.get_by_label("Unit").select_option("x10^9/L")
    page.get_by_label("Date of the sample").fill(TODAY.isoformat())
    page.get_by_role("button", name="Save the result").click()
    page.wait_for_url("**/patients/itp-18?saved=labs")

    card = page.locator("article.alert-card", has_text="Immune thrombocytopenia")
    assert card.locator(".badge.urgency-urgent").inner_text().endswith("URGENT")
    assert "Platelet count 18" in card.inner_text()
    assert "Source:" in card.inner_text()
    assert "18" in page.locator("#chart-platelets desc").text_content()
    screenshot(page, server, "patient")
    assert_accessible(page, "patient")

    page.get_by_role("link", name="Today").click()
    row = page.locator("#call-first ~ ol > li", has_text="itp-18")
    assert "URGENT" in row.inner_text()
    row.get_by_role("button", name=re.compile("Acknowledge")).click()
    acknowledged = page.locator("#call-first ~ ol > li", has_text="itp-18")
    acknowledged.get_by_text("Acknowledged by nurse:e2e-nurse").wait_for()
    assert acknowledged.get_by_role("button", name=re.compile("Acknowledge")).count() == 0

    itp = next(a for a in alerts(server, "itp-18") if a.code == "itp")
    assert (itp.severity, itp.status, itp.acknowledged_by) == ("urgent", "acknowledged", "nurse:e2e-nurse")
    assert audited(server, "itp-18", "acknowledge") == 1
    assert audited(server, "itp-18", "create") == 1


def test_a_clinician_resolves_with_a_reason_and_a_nurse_cannot(server: LiveServer, new_page: Any) -> None:
    seed(server, patient_file("resolve-1", months_ago(6), labs=[lab("tsh", 9.5, "mIU/L", TODAY)]))
    nurse = new_page()
    login(nurse, server, server.nurse)
    nurse.goto(server.url("/patients/resolve-1"))
    assert nurse.get_by_label("Reason for resolving").count() == 0

    page = new_page()
    login(page, server, server.clinician)
    page.goto(server.url("/patients/resolve-1"))
    card = page.locator("article.alert-card", has_text="Thyroid")
    card.get_by_role("button", name=re.compile("Resolve")).click()
    card = page.locator("article.alert-card", has_text="Thyroid")
    card.get_by_text("Required.").wait_for()
    card.get_by_label("Reason for resolving").fill("Endocrinology started carbimazole")
    card.get_by_role("button", name=re.compile("Resolve")).click()
    page.locator("article.alert-card", has_text="resolved by clinician:e2e-clinician").wait_for()
    thyroid = next(a for a in alerts(server, "resolve-1") if a.code == "thyroid")
    assert (thyroid.status, thyroid.resolution_reason) == ("resolved", "Endocrinology started carbimazole")


# --- forms: errors beside the field, nothing lost ---------------------------------------------------------


def test_a_failed_lab_entry_keeps_what_was_typed_and_either_unit_is_accepted(server: LiveServer, new_page: Any) -> None:
    seed(server, patient_file("lab-units", months_ago(2), labs=[lab("creatinine", 70, "umol/L", months_ago(3))]))
    page = new_page()
    login(page, server, server.nurse)
    page.goto(server.url("/patients/lab-units/labs"))
    page.get_by_label("Test").select_option("creatinine")
    page.locator("#field-unit option[value='mg/dL']").wait_for(state="attached")  # HTMX swapped the units in
    page.get_by_label("Value").fill("1,3x")
    page.get_by_label("Unit").select_option("mg/dL")
    page.get_by_label("Lower reference limit (optional)").fill("0.5")
    page.get_by_role("button", name="Save the result").click()

    assert page.locator("#f-value-error").inner_text().endswith("not '1,3x'.")
    assert page.get_by_label("Value").input_value() == "1,3x"
    assert page.get_by_label("Unit").input_value() == "mg/dL"
    assert page.get_by_label("Lower reference limit (optional)").input_value() == "0.5"
    assert page.locator("#error-summary").is_visible()
    screenshot(page, server, "form-errors")
    assert_accessible(page, "form-errors")

    page.get_by_label("Value").fill("1.3")
    page.get_by_label("Lower reference limit (optional)").fill("")
    page.get_by_role("button", name="Save the result").click()
    page.wait_for_url("**/patients/lab-units?saved=labs")
    assert "115 umol/L" in page.locator("article.alert-card", has_text="glomerular").inner_text()


def test_the_nurse_forms_record_what_the_plan_needs(server: LiveServer, new_page: Any) -> None:
    page = new_page()
    login(page, server, server.nurse)
    page.get_by_role("link", name="New patient").click()
    page.get_by_label("Date of birth").fill("1990-02-03")
    page.get_by_label("HIV status").select_option("negative")
    page.get_by_role("button", name="Create the patient").click()
    assert page.locator("#f-id-error").inner_text().endswith("Required.")
    assert page.get_by_label("Date of birth").input_value() == "1990-02-03"
    assert page.get_by_label("HIV status").input_value() == "negative"
    page.get_by_label("Patient id").fill("forms-1")
    page.get_by_role("button", name="Create the patient").click()
    page.wait_for_url("**/patients/forms-1?saved=patient")

    page.get_by_role("link", name="Infusion day").click()
    page.get_by_label("Infusion date").fill(TODAY.isoformat())
    page.get_by_role("radio", name="Yes").check()
    page.get_by_label("Infusion ended at").fill("12:00")
    page.get_by_label("Observation ended at").fill("11:30")
    page.get_by_label("Pulse (/min)").fill("76")
    page.get_by_label("Reaction (leave empty if none)").fill("rash")
    page.get_by_role("button", name="Save the infusion day").click()
    assert "after the end of the infusion" in page.locator("#f-observation_end-error").inner_text()
    assert page.get_by_label("Reaction (leave empty if none)").input_value() == "rash"
    assert page.get_by_role("radio", name="Yes").is_checked()
    screenshot(page, server, "form-infusion")
    assert_accessible(page, "form-infusion")
    page.get_by_label("Observation ended at").fill("14:05")
    page.get_by_role("button", name="Save the infusion day").click()
    page.wait_for_url("**/patients/forms-1?saved=infusions")
    infusions = page.locator("table:has(caption:text('Infusions'))").inner_text()
    assert "125" in infusions and "rash" in infusions
    page.locator("summary", has_text="Examinations").click()
    assert "pulse 76/min" in page.locator("#records ~ details").nth(1).inner_text()

    page.get_by_role("link", name="Examination").click()
    page.get_by_label("Examination").fill("skin")
    page.get_by_role("button", name="Save the examination").click()
    page.wait_for_url("**/patients/forms-1?saved=exams")

    page.get_by_role("link", name="Vaccination").click()
    page.get_by_label("Vaccine").fill("influenza (inactivated)")
    page.get_by_role("radio", name="No").check()
    page.get_by_role("button", name="Save the vaccination").click()
    page.wait_for_url("**/patients/forms-1?saved=vaccinations")

    page.get_by_role("link", name="Prophylaxis").first.click()
    page.get_by_label("Drug").fill("aciclovir")
    page.get_by_label("Start date").fill(TODAY.isoformat())
    page.get_by_role("button", name="Record the start").click()
    page.wait_for_url("**/patients/forms-1?saved=prophylaxis")
    page.get_by_role("link", name="Prophylaxis").first.click()
    page.get_by_label("Stop date").fill((TODAY - dt.timedelta(days=3)).isoformat())
    page.get_by_role("button", name="Record the stop").click()
    assert "before the start" in page.locator("#f-stop-error").inner_text()
    page.get_by_label("Stop date").fill(TODAY.isoformat())
    page.get_by_role("button", name="Record the stop").click()
    page.wait_for_url("**/patients/forms-1?saved=prophylaxis")
    assert f"to {TODAY.day} " in page.locator("#courses ~ ul").last.inner_text()


# --- the patient portal ---------------------------------------------------------------------------------


def test_a_red_flag_report_shows_the_emergency_banner_first_and_reaches_the_team(
    server: LiveServer, new_page: Any
) -> None:
    seed(server, patient_file("portal-red", TODAY - dt.timedelta(days=1)), patient_user="pat-red")
    page = new_page()
    login(page, server, "pat-red")
    assert page.url.endswith("/portal")
    assert_accessible(page, "portal")
    page.get_by_label("Describe your symptoms in your own words").fill(RED_FLAG)
    page.get_by_role("button", name="Send to my MS team").click()

    banner = page.locator("#banner")
    assert banner.get_by_role("heading").inner_text().endswith("Call emergency services now")
    first = page.evaluate("document.querySelector('body > :not(.skip-link)').id")
    assert first == "banner", "the banner comes before anything else on the page"
    box = banner.bounding_box()
    assert box is not None and box["y"] == 0 and box["width"] == page.viewport_size["width"]
    assert page.evaluate("getComputedStyle(document.querySelector('#banner')).position") != "fixed"
    screenshot(page, server, "portal-emergency")
    assert_accessible(page, "portal-emergency")

    nurse = new_page()
    login(nurse, server, server.nurse)
    row = nurse.locator("#call-first ~ ol > li", has_text="portal-red")
    assert "EMERGENCY" in row.inner_text()
    with session_factory(server.db_url)() as session:
        report = session.execute(select(m.SymptomReport).where(m.SymptomReport.patient_id == "portal-red")).scalar_one()
    assert (report.text, report.urgency) == (RED_FLAG, "emergency")


def test_a_patient_cannot_open_another_patients_page(server: LiveServer, new_page: Any) -> None:
    seed(server, patient_file("own-1", months_ago(2)), patient_user="pat-own")
    seed(server, patient_file("other-1", months_ago(2)))
    page = new_page()
    login(page, server, "pat-own")
    for path in ("/patients/other-1", "/patients/other-1/schedule.ics", "/patients/other-1/labs", "/"):
        response = page.goto(server.url(path))
        assert response is not None and response.status == 403, path
        assert "other-1" not in page.content(), path
    page.goto(server.url("/patients/own-1"))
    assert page.url.endswith("/portal")
    with session_factory(server.db_url)() as session:
        denied = select(m.AuditEvent).where(m.AuditEvent.outcome == "denied", m.AuditEvent.username == "pat-own")
        assert len(list(session.execute(denied).scalars())) == 4


def test_the_schedule_and_the_alert_card_download(server: LiveServer, new_page: Any) -> None:
    seed(server, patient_file("take-1", months_ago(2)), patient_user="pat-take")
    page = new_page()
    login(page, server, "pat-take")
    with page.expect_download() as ics_download:
        page.get_by_role("link", name=re.compile("calendar")).click()
    calendar = Calendar.from_ical(ics_download.value.path().read_bytes())
    events = calendar.walk("VEVENT")
    assert len(events) >= 12
    starts = [event.decoded("dtstart") for event in events]
    assert all(start >= TODAY - dt.timedelta(days=31) for start in starts), "only tests whose window is still open"
    assert any("CBC with differential" in str(event["summary"]) for event in events)
    assert len({str(event["uid"]) for event in events}) == len(events)

    with page.expect_download() as pdf_download:
        page.get_by_role("link", name="My alert card (PDF)").click()
    text = "\n".join(page_.extract_text() for page_ in PdfReader(pdf_download.value.path()).pages)
    assert "alert card: alemtuzumab" in text
    assert "take-1" in text
    assert "Call emergency services now" in text


# --- knowledge, keyboard and phone width -----------------------------------------------------------------


def test_the_knowledge_pages_are_searchable_and_sourced(server: LiveServer, new_page: Any) -> None:
    page = new_page()
    login(page, server, server.nurse)
    page.get_by_role("link", name="Knowledge").click()
    assert page.locator("figure svg.bars rect.bar").count() >= 20
    screenshot(page, server, "knowledge")
    assert_accessible(page, "knowledge")
    page.get_by_label("Search effects, symptoms or actions").fill("bruising")
    page.wait_for_function("!document.querySelector('#catalogue').innerText.includes('Thyroid cancer')")
    risks = page.locator("#catalogue article.risk")
    assert "Immune thrombocytopenia" in risks.all_inner_texts()[0]
    for text in risks.all_inner_texts():
        assert "Source:" in text and "Watch for:" in text and "What to do:" in text


def test_the_pages_work_with_the_keyboard(server: LiveServer, new_page: Any) -> None:
    page = new_page()
    page.goto(server.url("/login"))
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to main content"
    page.get_by_label("Username").focus()
    page.keyboard.type(server.nurse)
    page.keyboard.press("Tab")
    page.keyboard.type("correct horse battery staple")
    page.keyboard.press("Enter")
    page.wait_for_url(server.url("/"))
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    outline = page.evaluate(
        "() => { const a = document.querySelector('main a'); a.focus(); return getComputedStyle(a).outlineStyle }"
    )
    assert outline != "none", "focus is visible"


def test_today_and_the_portal_fit_a_phone(server: LiveServer, new_page: Any) -> None:
    seed(server, patient_file("phone-1", TODAY - dt.timedelta(days=1)), patient_user="pat-phone")
    for username, name in ((server.nurse, "today-phone"), ("pat-phone", "portal-phone")):
        page = new_page(PHONE)
        login(page, server, username)
        if username == "pat-phone":
            page.get_by_label("Describe your symptoms in your own words").fill(RED_FLAG)
            page.get_by_role("button", name="Send to my MS team").click()
            page.locator("#banner").wait_for()
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], f"{name} scrolls sideways"
        screenshot(page, server, name, full_page=False)
        assert_accessible(page, name)
