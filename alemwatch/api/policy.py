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
}
