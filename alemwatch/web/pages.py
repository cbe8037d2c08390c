"""The pages people read: Today, patients, one patient, the portal, knowledge, and the
take-aways (calendar and PDF). Thin: read through `service`, shape through `present`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, Response

from alemwatch.web import charts, exports, forms, present, service
from alemwatch.web.context import STATIC_DIR, Ctx, CtxDep, FormDep, see_other, templates

router = APIRouter()
SAVED = {
    "labs": "Lab result saved.",
    "infusions": "Infusion day saved.",
    "exams": "Examination saved.",
    "vaccinations": "Vaccination saved.",
    "prophylaxis": "Prophylaxis saved.",
    "patient": "Patient created.",
}


def lookups(ctx: Ctx) -> dict[str, Any]:
    """Names and sources the templates look rule ids and codes up in."""
    return {
        "sources": present.source_index(ctx.protocol),
        "conditions": present.condition_names(ctx.protocol),
        "task_names": present.task_names(ctx.protocol),
    }


def serious_effects(ctx: Ctx) -> list[Any]:
    return [e for e in ctx.protocol.adverse_effects if e.category == "serious" and e.watch]


@router.get("/", name="web_today")
def today(ctx: CtxDep) -> HTMLResponse:
    view = present.worklist_view(service.worklist(ctx), ctx.protocol, service.WORKLIST_LIMIT)
    return ctx.render("today.html", view=view, **lookups(ctx))


@router.get("/patients", name="web_patients")
def patients(ctx: CtxDep, q: str = "") -> HTMLResponse:
    query = q.strip()[:100]
    rows, total = service.search(ctx, query or None)
    return ctx.render("patients.html", rows=rows, total=total, q=query)


def patient_page(ctx: Ctx, patient_id: str, status: int = 200, **extra: Any) -> HTMLResponse:
    view = service.patient_view(ctx, patient_id, f"/patients/{patient_id}")
    current, resolved = service.alerts_of(ctx, patient_id)
    tasks = view.result["monitoring"]["tasks"]
    return ctx.render(
        "patient.html",
        status,
        p=view,
        current_alerts=current,
        resolved_alerts=resolved,
        plan=present.plan_years(tasks, ctx.protocol),
        months=present.MONTHS,
        next_tests=present.visits(present.open_tasks(tasks, ctx.today), present.task_names(ctx.protocol)),
        counts=present.task_counts(tasks),
        charts=charts.trend_charts(view.chart),
        reports=service.symptom_reports(ctx, patient_id),
        age=present.age(view.data.get("birth_date"), ctx.today),
        **lookups(ctx),
        **extra,
    )


@router.get("/patients/{patient_id}", name="web_patient")
def patient(patient_id: str, ctx: CtxDep, saved: str = "") -> Response:
    if ctx.actor.role == "patient":
        return see_other("/portal")  # the access rule has checked it is their own record
    return patient_page(ctx, patient_id, saved=SAVED.get(saved, ""))


@router.get("/knowledge", name="web_knowledge")
def knowledge(ctx: CtxDep, q: str = "") -> HTMLResponse:
    query = q.strip()[:100]
    effects = present.search_effects(ctx.protocol.adverse_effects, query)
    return ctx.render(
        "knowledge.html",
        q=query,
        freq=charts.frequency_chart(ctx.protocol.adverse_effects),
        serious=[e for e in effects if e.category == "serious"],
        common=[e for e in effects if e.category == "common"],
    )


# --- the portal ------------------------------------------------------------------------------


def _own_patient_id(ctx: Ctx) -> str:
    if ctx.actor.patient_id is None:
        raise HTTPException(status_code=404, detail="no patient record is linked to this account")
    return ctx.actor.patient_id


def portal_page(
    ctx: Ctx, values: forms.Values, errors: forms.Errors, triage: dict[str, Any] | None, status: int = 200
) -> HTMLResponse:
    patient_id = _own_patient_id(ctx)
    view = service.patient_view(ctx, patient_id, "/portal")
    return ctx.render(
        "portal.html",
        status,
        p=view,
        triage=triage,
        report_spec=forms.report_form(),
        values=values,
        errors=errors,
        next_tests=present.visits(
            present.open_tasks(view.result["monitoring"]["tasks"], ctx.today), present.task_names(ctx.protocol)
        ),
        watch=serious_effects(ctx),
        reports=service.symptom_reports(ctx, patient_id),
        **lookups(ctx),
    )


@router.get("/portal", name="web_portal")
def portal(ctx: CtxDep) -> HTMLResponse:
    return portal_page(ctx, {"date": ctx.today.isoformat()}, {}, None)


@router.post("/portal", name="web_portal_report")
def portal_report(ctx: CtxDep, values: FormDep) -> HTMLResponse:
    report, errors = forms.parse_report(values, ctx.today)
    if errors:
        return portal_page(ctx, values, errors, None, 422)
    result = service.report_symptoms(ctx, _own_patient_id(ctx), report["text"], report["date"])
    return portal_page(ctx, {"date": ctx.today.isoformat()}, {}, result)


# --- take-aways ----------------------------------------------------------------------------------


def _attachment(filename: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"}


@router.get("/patients/{patient_id}/schedule.ics", name="web_schedule_ics")
def schedule_ics(patient_id: str, ctx: CtxDep) -> Response:
    view = service.patient_view(ctx, patient_id, f"/patients/{patient_id}/schedule.ics")
    body = exports.schedule_calendar(patient_id, view.result, ctx.protocol, ctx.today)
    return Response(body, media_type="text/calendar; charset=utf-8", headers=_attachment(f"{patient_id}-schedule.ics"))


@router.get("/patients/{patient_id}/card.pdf", name="web_card_pdf")
def card_pdf(patient_id: str, ctx: CtxDep) -> Response:
    view = service.patient_view(ctx, patient_id, f"/patients/{patient_id}/card.pdf")
    tasks = view.result["monitoring"]["tasks"]
    watch = serious_effects(ctx)
    html = templates.get_template("card.html").render(
        p=view,
        protocol=ctx.protocol,
        today=ctx.today,
        watch=watch,
        stroke=next((e for e in watch if e.condition == "stroke_dissection"), None),
        next_tests=present.visits(present.open_tasks(tasks, ctx.today, 180), present.task_names(ctx.protocol)),
        counts=present.task_counts(tasks),
        **lookups(ctx),
    )
    pdf = exports.pdf_from_html(html, base_url=str(STATIC_DIR) + "/")
    return Response(pdf, media_type="application/pdf", headers=_attachment(f"{patient_id}-alert-card.pdf"))
