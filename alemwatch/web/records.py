"""The forms a nurse uses, and acting on alerts. A valid form is stored and the patient page
shows the result (and any alert it raised); an invalid one comes back with every error beside
its field and everything that was typed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from alemwatch.core.patient import PatientFileError
from alemwatch.registry.alerts import AlertStateError
from alemwatch.store import models as m
from alemwatch.web import forms, service
from alemwatch.web.context import Ctx, CtxDep, FormDep, safe_next, see_other
from alemwatch.web.pages import lookups, patient_page

router = APIRouter()
INFUSION_ALIASES = {"observation_minutes": "observation_end", "reactions": "reaction_type", "result": "bp_systolic"}


def form_page(
    ctx: Ctx,
    patient_id: str | None,
    spec: forms.FormSpec,
    values: forms.Values,
    errors: forms.Errors,
    status: int = 200,
) -> HTMLResponse:
    return ctx.render(
        "form.html",
        status,
        spec=spec,
        values=values,
        errors=errors,
        patient_id=patient_id,
        action=ctx.request.url.path,
        hidden={},
    )


def save(
    ctx: Ctx,
    patient_id: str,
    batches: dict[str, list[dict[str, Any]]],
    submitted: tuple[forms.Values, forms.Errors, forms.FormSpec],
    fallback: str,
    aliases: Mapping[str, str] | None = None,
) -> Response:
    """Store a form's records and show the patient, or show the form again with its errors."""
    values, errors, spec = submitted
    if not errors:
        try:
            service.add_records(ctx, patient_id, batches)
            return see_other(f"/patients/{patient_id}?saved={next(iter(batches))}")
        except PatientFileError as exc:
            errors[forms.field_of(exc.field, tuple(f.name for f in spec.fields), fallback, aliases)] = exc.problem
        except service.AlreadyRecorded:
            errors["date"] = "This was recorded before: there is nothing new to save."
    return form_page(ctx, patient_id, spec, values, errors, 422)


def _today(ctx: Ctx, **more: str) -> forms.Values:
    return {"date": ctx.today.isoformat(), **more}


# --- new patient ------------------------------------------------------------------------------


@router.get("/patients/new", name="web_new_patient")
def new_patient(ctx: CtxDep) -> HTMLResponse:
    return form_page(
        ctx, None, forms.patient_form(), {"sex": "female", "hiv": "unknown", "tuberculosis": "unknown"}, {}
    )


@router.post("/patients/new", name="web_create_patient")
def create_patient(ctx: CtxDep, values: FormDep) -> Response:
    spec = forms.patient_form()
    raw, errors = forms.parse_patient_form(values, ctx.today)
    if not errors:
        try:
            patient_id = service.create_patient(ctx, raw)
            return see_other(f"/patients/{patient_id}?saved=patient")
        except PatientFileError as exc:
            errors[forms.field_of(exc.field, tuple(f.name for f in spec.fields), "id")] = exc.problem
    return form_page(ctx, None, spec, values, errors, 422)


# --- records of a patient -----------------------------------------------------------------------


@router.get("/patients/{patient_id}/labs", name="web_lab_form")
def lab_form(patient_id: str, ctx: CtxDep, test: str = "platelets") -> HTMLResponse:
    service.patient_exists(ctx, patient_id)
    unit = next(iter(ctx.protocol.analytes.get(test, ctx.protocol.analytes["platelets"]).units))  # type: ignore[call-overload]
    return form_page(
        ctx, patient_id, forms.lab_form(ctx.protocol, test, ctx.request.url.path), _today(ctx, test=test, unit=unit), {}
    )


@router.post("/patients/{patient_id}/labs", name="web_add_lab")
def add_lab(patient_id: str, ctx: CtxDep, values: FormDep) -> Response:
    item, errors = forms.parse_lab(values, ctx.today)
    spec = forms.lab_form(ctx.protocol, values.get("test"), ctx.request.url.path)
    return save(ctx, patient_id, {"labs": [item]}, (values, errors, spec), "value")


@router.get("/patients/{patient_id}/infusions", name="web_infusion_form")
def infusion_form(patient_id: str, ctx: CtxDep) -> HTMLResponse:
    service.patient_exists(ctx, patient_id)
    return form_page(ctx, patient_id, forms.infusion_form(), _today(ctx, dose_mg="12"), {})


@router.post("/patients/{patient_id}/infusions", name="web_add_infusion")
def add_infusion(patient_id: str, ctx: CtxDep, values: FormDep) -> Response:
    infusion, vitals, errors = forms.parse_infusion(values, ctx.today)
    batches = {"infusions": [infusion], **({"exams": [vitals]} if vitals else {})}
    return save(ctx, patient_id, batches, (values, errors, forms.infusion_form()), "date", INFUSION_ALIASES)


@router.get("/patients/{patient_id}/exams", name="web_exam_form")
def exam_form(patient_id: str, ctx: CtxDep) -> HTMLResponse:
    service.patient_exists(ctx, patient_id)
    return form_page(ctx, patient_id, forms.exam_form(ctx.protocol), _today(ctx), {})


@router.post("/patients/{patient_id}/exams", name="web_add_exam")
def add_exam(patient_id: str, ctx: CtxDep, values: FormDep) -> Response:
    item, errors = forms.parse_exam(values, ctx.today)
    return save(ctx, patient_id, {"exams": [item]}, (values, errors, forms.exam_form(ctx.protocol)), "type")


@router.get("/patients/{patient_id}/vaccinations", name="web_vaccination_form")
def vaccination_form(patient_id: str, ctx: CtxDep) -> HTMLResponse:
    service.patient_exists(ctx, patient_id)
    return form_page(ctx, patient_id, forms.vaccination_form(), _today(ctx), {})


@router.post("/patients/{patient_id}/vaccinations", name="web_add_vaccination")
def add_vaccination(patient_id: str, ctx: CtxDep, values: FormDep) -> Response:
    item, errors = forms.parse_vaccination(values, ctx.today)
    return save(ctx, patient_id, {"vaccinations": [item]}, (values, errors, forms.vaccination_form()), "vaccine")


# --- prophylaxis: start or stop ---------------------------------------------------------------------


def prophylaxis_page(
    ctx: Ctx, patient_id: str, values: forms.Values, errors: forms.Errors, status: int = 200
) -> HTMLResponse:
    data = service.patient_file(ctx, patient_id, f"/patients/{patient_id}/prophylaxis")
    open_records = service.open_prophylaxis(data)
    return ctx.render(
        "prophylaxis.html",
        status,
        patient_id=patient_id,
        action=f"/patients/{patient_id}/prophylaxis",
        start_spec=forms.prophylaxis_start_form(),
        stop_spec=forms.prophylaxis_stop_form(open_records) if open_records else None,
        values=values,
        errors=errors,
    )


@router.get("/patients/{patient_id}/prophylaxis", name="web_prophylaxis_form")
def prophylaxis_form(patient_id: str, ctx: CtxDep) -> HTMLResponse:
    return prophylaxis_page(ctx, patient_id, {"start": ctx.today.isoformat(), "drug": "aciclovir"}, {})


@router.post("/patients/{patient_id}/prophylaxis", name="web_change_prophylaxis")
def change_prophylaxis(patient_id: str, ctx: CtxDep, values: FormDep) -> Response:
    if values.get("action") == "stop":
        data = service.patient_file(ctx, patient_id, f"/patients/{patient_id}/prophylaxis")
        record, stop, errors = forms.parse_prophylaxis_stop(values, ctx.today, service.open_prophylaxis(data))
        if errors or record is None or stop is None:
            return prophylaxis_page(ctx, patient_id, values, errors, 422)
        service.stop_prophylaxis(ctx, patient_id, record["start"], stop)
        return see_other(f"/patients/{patient_id}?saved=prophylaxis")
    item, errors = forms.parse_prophylaxis_start(values, ctx.today)
    if not errors:
        try:
            service.add_records(ctx, patient_id, {"prophylaxis": [item]})
            return see_other(f"/patients/{patient_id}?saved=prophylaxis")
        except PatientFileError as exc:
            errors[forms.field_of(exc.field, ("drug", "start"), "start")] = exc.problem
        except service.AlreadyRecorded:
            errors["start"] = "A prophylaxis starting on this date is recorded already."
    return prophylaxis_page(ctx, patient_id, {**values, "action": "start"}, errors, 422)


# --- alerts: acknowledge and resolve in place ----------------------------------------------------------


def alert_answer(
    ctx: Ctx, alert: m.Alert, values: forms.Values, errors: forms.Errors | None = None, status: int = 200
) -> Response:
    """The alert again (HTMX: in place, as a worklist row or a patient-page card), or the page it came from."""
    alert_errors = {alert.id: errors} if errors else {}
    alert_values = {alert.id: values.get("reason", "")}
    if ctx.is_htmx and values.get("view") == "today":
        problem = (errors or {}).get("form", "")
        return ctx.render("partials/alert_row.html", status, a=alert, problem=problem, **lookups(ctx))
    if ctx.is_htmx:
        context = {"a": alert, "alert_errors": alert_errors, "alert_values": alert_values, **lookups(ctx)}
        return ctx.render("partials/alert.html", status, **context)
    if errors:
        return patient_page(ctx, alert.patient_id, status, alert_errors=alert_errors, alert_values=alert_values)
    return see_other(safe_next(values.get("next"), f"/patients/{alert.patient_id}#alert-{alert.id}"))


@router.post("/patients/{patient_id}/alerts/{alert_id}/acknowledge", name="web_acknowledge")
def acknowledge(patient_id: str, alert_id: str, ctx: CtxDep, values: FormDep) -> Response:
    try:
        alert = service.acknowledge(ctx, patient_id, alert_id)
    except AlertStateError as exc:
        return alert_answer(ctx, service.find_alert(ctx, patient_id, alert_id), values, {"form": str(exc)}, 409)
    return alert_answer(ctx, alert, values)


@router.post("/patients/{patient_id}/alerts/{alert_id}/resolve", name="web_resolve")
def resolve(patient_id: str, alert_id: str, ctx: CtxDep, values: FormDep) -> Response:
    reason, errors = forms.resolve_reason(values)
    if errors or reason is None:
        return alert_answer(ctx, service.find_alert(ctx, patient_id, alert_id), values, errors, 422)
    try:
        alert = service.resolve(ctx, patient_id, alert_id, reason)
    except AlertStateError as exc:
        return alert_answer(ctx, service.find_alert(ctx, patient_id, alert_id), values, {"form": str(exc)}, 409)
    return alert_answer(ctx, alert, values)
