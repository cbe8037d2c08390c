"""Who may call which route: one table, read by the `authorize` dependency and by the role
matrix test (a route missing here is refused, and fails that test)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    roles: frozenset[str] = frozenset()
    own_record: bool = False  # a patient may use it only for their own record (path patient_id)
    public: bool = False


CARE = frozenset({"clinician", "nurse"})
CARE_AND_PATIENT = frozenset({"clinician", "nurse", "patient"})
EVERYONE = frozenset({"admin", "clinician", "nurse", "patient"})

POLICY: dict[str, Rule] = {
    # open
    "health": Rule(public=True),
    "login": Rule(public=True),
    "issue_token": Rule(public=True),
    # any signed-in user
    "logout": Rule(EVERYONE),
    "me": Rule(EVERYONE),
    # stateless clinical tools
    "assess_file": Rule(CARE),
    "triage": Rule(CARE_AND_PATIENT),
    # patients and their records
    "list_patients": Rule(CARE),
    "create_patient": Rule(CARE),
    "read_patient": Rule(CARE_AND_PATIENT, own_record=True),
    "update_patient": Rule(CARE),
    "read_assessment": Rule(CARE_AND_PATIENT, own_record=True),
    "list_records": Rule(CARE_AND_PATIENT, own_record=True),
    "add_records": Rule(CARE),
    "add_symptom_report": Rule(CARE_AND_PATIENT, own_record=True),
    # alerts and the worklist
    "patient_alerts": Rule(CARE),
    "acknowledge_alert": Rule(CARE),
    "resolve_alert": Rule(frozenset({"clinician"})),
    "worklist": Rule(CARE),
    # administration
    "list_users": Rule(frozenset({"admin"})),
    # FHIR R4 (alemwatch.api.fhir): the care team; the capability statement is open
    "fhir_metadata": Rule(public=True),
    "fhir_transaction": Rule(CARE),
    "fhir_create": Rule(CARE),
    "fhir_update": Rule(CARE),
    "fhir_everything": Rule(CARE),
    "fhir_read": Rule(CARE),
    "fhir_search": Rule(CARE),
    # CDS Hooks (alemwatch.api.cds): discovery is open; the EHR calls with a care-team token
    "cds_discovery": Rule(public=True),
    "cds_service": Rule(CARE),
    "cds_feedback": Rule(CARE),
    # web pages (alemwatch.web): the same rules as the API routes they mirror
    "web_login_form": Rule(public=True),
    "web_login": Rule(public=True),
    "web_logout": Rule(EVERYONE),
    "web_today": Rule(CARE),
    "web_patients": Rule(CARE),
    "web_new_patient": Rule(CARE),
    "web_create_patient": Rule(CARE),
    "web_patient": Rule(CARE_AND_PATIENT, own_record=True),  # a patient is sent on to the portal
    "web_lab_form": Rule(CARE),
    "web_add_lab": Rule(CARE),
    "web_infusion_form": Rule(CARE),
    "web_add_infusion": Rule(CARE),
    "web_exam_form": Rule(CARE),
    "web_add_exam": Rule(CARE),
    "web_vaccination_form": Rule(CARE),
    "web_add_vaccination": Rule(CARE),
    "web_prophylaxis_form": Rule(CARE),
    "web_change_prophylaxis": Rule(CARE),
    "web_acknowledge": Rule(CARE),
    "web_resolve": Rule(frozenset({"clinician"})),
    "web_schedule_ics": Rule(CARE_AND_PATIENT, own_record=True),
    "web_card_pdf": Rule(CARE_AND_PATIENT, own_record=True),
    "web_portal": Rule(frozenset({"patient"})),
    "web_portal_report": Rule(frozenset({"patient"})),
    "web_knowledge": Rule(EVERYONE),
    "web_smart_launch": Rule(CARE),  # SMART on FHIR EHR launch (alemwatch.web.smart)
    "web_smart_callback": Rule(CARE),
}
