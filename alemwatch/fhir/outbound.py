"""The registry's records and assessments out as FHIR R4 resources (plain JSON dicts).

Ids: a patient keeps its own id; a record's FHIR id is `{patient id}.{record id}` so that a
read by id finds the patient without a search (see `split_id`). Everything emitted here is
validated against fhir.resources in the tests."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from alemwatch.fhir import codes
from alemwatch.protocol.model import Protocol

FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
SEVERITY = {"emergency": "high", "urgent": "high", "soon": "moderate", "routine": "low"}
TASK_STATUS = {"done": "completed", "due": "scheduled", "overdue": "scheduled", "upcoming": "not-started"}


def record_id(patient_id: str, record: str) -> str:
    """The FHIR id of one record: `{patient}.{record}`; when that is not a FHIR id (too long, or
    odd characters) the record part is hashed, `{patient}.h-{hash}`, so that a read by id still
    finds the patient (a server-assigned UUID patient id leaves no room for a content id). Only
    a patient id that cannot lead an id (a dot, odd characters, too long) gives a whole hash,
    which can be searched for but not read by id."""
    joined = f"{patient_id}.{record}"
    if "." not in patient_id and FHIR_ID.match(joined):
        return joined
    digest = hashlib.sha256(f"{patient_id}\0{record}".encode()).hexdigest()
    short = f"{patient_id}.h-{digest[:20]}"
    if "." not in patient_id and FHIR_ID.match(short):
        return short
    return "h-" + digest[:40]


def split_id(fhir_id: str) -> tuple[str, str] | None:
    patient, dot, record = fhir_id.partition(".")
    return (patient, record) if dot and patient and record else None


def local_id(patient_id: str, fhir_id: str | None) -> str | None:
    """A resource id as a record id: our own `{patient}.` prefix is taken off (round trips)."""
    if not fhir_id:
        return None
    return fhir_id.removeprefix(f"{patient_id}.")


def _ref(patient_id: str) -> dict[str, str]:
    return {"reference": f"Patient/{patient_id}"}


def _quantity(value: float | None, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": codes.UCUM, "code": unit}


def patient(data: dict[str, Any]) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": data["id"],
        "identifier": [{"system": f"{codes.BASE}/patient-id", "value": data["id"]}],
        "gender": data.get("sex", "unknown"),
    }
    if data.get("birth_date"):
        resource["birthDate"] = data["birth_date"]
    screening = data.get("screening") or {}
    parts = [
        {"url": key, "valueCode": value} if isinstance(value, str) else {"url": key, "valueBoolean": bool(value)}
        for key, value in screening.items()
    ]
    if parts:
        resource["extension"] = [{"url": codes.EXT_SCREENING, "extension": parts}]
    return resource


def lab_observation(patient_id: str, lab: dict[str, Any], protocol: Protocol) -> dict[str, Any]:
    spec = protocol.analytes[lab["test"]]
    unit = lab["unit"]
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": record_id(patient_id, lab["id"]),
        "identifier": [{"system": codes.LAB_ID_SYSTEM, "value": lab["id"]}],
        "status": "final",
        "category": [{"coding": [{"system": codes.OBSERVATION_CATEGORY, "code": "laboratory"}]}],
        "code": {"coding": [{"system": codes.LOINC, "code": spec.loinc[0], "display": spec.name}], "text": spec.name},
        "subject": _ref(patient_id),
        "effectiveDateTime": lab["date"],
        "valueQuantity": _quantity(lab["value"], unit),
    }
    ranges: dict[str, Any] = {}
    if lab.get("ref_low") is not None:
        ranges["low"] = _quantity(lab["ref_low"], unit)
    if lab.get("ref_high") is not None:
        ranges["high"] = _quantity(lab["ref_high"], unit)
    if ranges:
        resource["referenceRange"] = [ranges]
    return resource


def symptom_observation(patient_id: str, report: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": record_id(patient_id, report["id"]),
        "status": "final",
        "category": [{"coding": [{"system": codes.OBSERVATION_CATEGORY, "code": "survey"}]}],
        "code": {
            "coding": [{"system": codes.CS_SYMPTOM, "code": codes.SYMPTOM_CODE, "display": "Symptom report"}],
            "text": "Symptoms in the patient's own words",
        },
        "subject": _ref(patient_id),
        "effectiveDateTime": report["date"],
        "valueString": report["text"],
    }


def administration(patient_id: str, infusion: dict[str, Any]) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "MedicationAdministration",
        "id": record_id(patient_id, infusion["id"]),
        "status": "completed",
        "medicationCodeableConcept": {"coding": [codes.ALEMTUZUMAB_CODING], "text": "alemtuzumab (Lemtrada)"},
        "subject": _ref(patient_id),
        "effectiveDateTime": infusion["date"],
    }
    extensions: list[dict[str, Any]] = []
    if infusion.get("premedication") is not None:
        extensions.append({"url": codes.EXT_PREMEDICATION, "valueBoolean": infusion["premedication"]})
    if infusion.get("observation_minutes") is not None:
        extensions.append({"url": codes.EXT_OBSERVATION_MINUTES, "valueDecimal": infusion["observation_minutes"]})
    for reaction in infusion.get("reactions") or []:
        parts: list[dict[str, Any]] = [{"url": "type", "valueString": reaction["type"]}]
        if reaction.get("severity"):
            parts.append({"url": "severity", "valueCode": reaction["severity"]})
        if reaction.get("onset_hours") is not None:
            parts.append({"url": "onset-hours", "valueDecimal": reaction["onset_hours"]})
        extensions.append({"url": codes.EXT_REACTION, "extension": parts})
    if extensions:
        resource["extension"] = extensions
    if infusion.get("dose_mg") is not None:
        resource["dosage"] = {"dose": {"value": infusion["dose_mg"], "unit": "mg", "system": codes.UCUM, "code": "mg"}}
    return resource


def immunization(patient_id: str, vaccination: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Immunization",
        "id": record_id(patient_id, vaccination["id"]),
        "extension": [{"url": codes.EXT_LIVE_VACCINE, "valueBoolean": vaccination["live"]}],
        "status": "completed",
        "vaccineCode": {"text": vaccination["vaccine"]},
        "patient": _ref(patient_id),
        "occurrenceDateTime": vaccination["date"],
    }


def statement(patient_id: str, prophylaxis: dict[str, Any]) -> dict[str, Any]:
    drug = prophylaxis["drug"]
    concept: dict[str, Any] = {"text": drug}
    if drug in codes.HERPES_RXNORM:
        concept["coding"] = [{"system": codes.RXNORM, "code": codes.HERPES_RXNORM[drug], "display": drug}]
    period = {"start": prophylaxis["start"], **({"end": prophylaxis["stop"]} if prophylaxis.get("stop") else {})}
    return {
        "resourceType": "MedicationStatement",
        "id": record_id(patient_id, prophylaxis["id"]),
        "status": "completed" if prophylaxis.get("stop") else "active",
        "medicationCodeableConcept": concept,
        "subject": _ref(patient_id),
        "effectivePeriod": period,
        "reasonCode": [{"text": "Herpes prophylaxis after alemtuzumab"}],
    }


def procedure(patient_id: str, exam: dict[str, Any]) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Procedure",
        "id": record_id(patient_id, exam["id"]),
        "status": "completed",
        "code": {"coding": [{"system": codes.CS_EXAM, "code": exam["type"]}], "text": exam["type"]},
        "subject": _ref(patient_id),
        "performedDateTime": exam["date"],
    }
    if exam.get("result"):
        resource["outcome"] = {"text": exam["result"]}
    return resource


def planned_course(patient_id: str, start: str) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": record_id(patient_id, "planned-course"),
        "status": "active",
        "intent": "plan",
        "medicationCodeableConcept": {"coding": [codes.ALEMTUZUMAB_CODING], "text": "alemtuzumab (Lemtrada)"},
        "subject": _ref(patient_id),
        "dosageInstruction": [
            {"text": "Next alemtuzumab course", "timing": {"repeat": {"boundsPeriod": {"start": start}}}}
        ],
    }


def record_resources(data: dict[str, Any], protocol: Protocol) -> list[dict[str, Any]]:
    """Every resource of one stored patient (the file from `repo.patient_file(ids=True)`)."""
    pid = data["id"]
    out = [patient(data)]
    if data.get("planned_course_start"):
        out.append(planned_course(pid, data["planned_course_start"]))
    out += [administration(pid, i) for i in data.get("infusions") or []]
    out += [lab_observation(pid, lab, protocol) for lab in data.get("labs") or []]
    out += [immunization(pid, v) for v in data.get("vaccinations") or []]
    out += [statement(pid, p) for p in data.get("prophylaxis") or []]
    out += [procedure(pid, e) for e in data.get("exams") or []]
    out += [symptom_observation(pid, s) for s in data.get("symptoms") or []]
    return out


# --- what the engine concludes ---------------------------------------------------------------


def care_plan(assessment: dict[str, Any], protocol: Protocol) -> dict[str, Any]:
    """The 48-month monitoring plan: one activity per task, with its status."""
    pid = assessment["patient"]
    names = {task.task: task.name for task in protocol.monitoring.tasks}
    tasks = assessment["monitoring"]["tasks"]
    courses = assessment.get("courses") or []
    activities = []
    for task in tasks:
        window = task.get("window") or [task["due"], task["due"]]
        name = names.get(task["task"], task["task"])
        activities.append(
            {
                "extension": [{"url": codes.EXT_TASK_STATUS, "valueCode": task["status"]}],
                "detail": {
                    "kind": "ServiceRequest",
                    "code": {
                        "coding": [{"system": codes.CS_TASK, "code": task["task"], "display": name}],
                        "text": name,
                    },
                    "status": TASK_STATUS[task["status"]],
                    **({"statusReason": {"text": "overdue"}} if task["status"] == "overdue" else {}),
                    "scheduledPeriod": {"start": window[0], "end": window[1]},
                    "description": f"{name}, due {task['due']}: {task['status']}"
                    + (f" (done {task['done_on']})" if task.get("done_on") else ""),
                },
            }
        )
    until = assessment["monitoring"].get("until")
    plan: dict[str, Any] = {
        "resourceType": "CarePlan",
        "id": f"{pid}.monitoring" if FHIR_ID.match(f"{pid}.monitoring") else record_id(pid, "monitoring"),
        "status": "active" if until and until >= assessment["as_of"] else "completed" if until else "draft",
        "intent": "plan",
        "title": "Alemtuzumab safety monitoring (48 months after the last infusion)",
        "description": (
            f"Monitoring per protocol {protocol.protocol_version} ({protocol.jurisdiction}), "
            f"as of {assessment['as_of']}"
        ),
        "subject": _ref(pid),
        "activity": activities,
    }
    if courses and until:
        plan["period"] = {"start": courses[0]["start"], "end": until}
    return plan


def detected_issues(assessment: dict[str, Any]) -> list[dict[str, Any]]:
    """One DetectedIssue per finding and per deviation."""
    pid = assessment["patient"]
    out = []
    for n, finding in enumerate(assessment.get("findings") or []):
        out.append(
            {
                "resourceType": "DetectedIssue",
                "id": record_id(pid, f"finding-{n}-{finding['rule']}".replace("_", "-").replace(".", "-")),
                "status": "final",
                "code": {
                    "coding": [{"system": codes.CS_CONDITION, "code": finding["condition"]}],
                    "text": finding["condition"].replace("_", " "),
                },
                "severity": SEVERITY[finding["severity"]],
                "patient": _ref(pid),
                **({"identifiedDateTime": finding["date"]} if finding.get("date") else {}),
                "detail": "; ".join(finding.get("evidence") or []) or finding["condition"],
                "reference": f"{codes.BASE}/protocol/{finding['rule']}",
                "mitigation": [{"action": {"text": finding["action"]}}] if finding.get("action") else [],
                "extension": [{"url": f"{codes.BASE}/StructureDefinition/urgency", "valueCode": finding["severity"]}],
            }
        )
    for n, deviation in enumerate(assessment.get("deviations") or []):
        out.append(
            {
                "resourceType": "DetectedIssue",
                "id": record_id(pid, f"deviation-{n}-{deviation['code']}".replace("_", "-")),
                "status": "final",
                "code": {
                    "coding": [{"system": codes.CS_DEVIATION, "code": deviation["code"]}],
                    "text": deviation["code"],
                },
                "severity": "moderate",
                "patient": _ref(pid),
                **({"identifiedDateTime": deviation["date"]} if deviation.get("date") else {}),
                "detail": deviation["message"],
            }
        )
    for issue in out:
        if not issue.get("mitigation"):
            issue.pop("mitigation", None)
    return out


def flag(alert: dict[str, Any]) -> dict[str, Any]:
    """An open alert as a Flag (the EHR's banner)."""
    pid = alert["patient_id"]
    system = codes.CS_CONDITION if alert["kind"] == "finding" else codes.CS_DEVIATION
    return {
        "resourceType": "Flag",
        "id": record_id(pid, f"alert-{alert['id']}"),
        "extension": [{"url": f"{codes.BASE}/StructureDefinition/urgency", "valueCode": alert["severity"]}],
        "status": "active",
        "category": [{"coding": [{"system": codes.FLAG_CATEGORY, "code": "clinical", "display": "Clinical"}]}],
        "code": {"coding": [{"system": system, "code": alert["code"]}], "text": alert["message"][:1000]},
        "subject": _ref(pid),
        "period": {"start": alert["raised_at"]},
    }
