"""The published JSON Schema of the patient file (the contract's input)."""

from __future__ import annotations

from typing import Any

from alemwatch.core.patient import Patient

INTERNAL_LAB_FIELDS = ("analyte", "canonical", "canonical_ref_low", "canonical_ref_high")


def patient_schema() -> dict[str, Any]:
    schema = Patient.model_json_schema(mode="validation")
    lab = schema["$defs"]["LabResult"]
    for name in INTERNAL_LAB_FIELDS:
        lab["properties"].pop(name, None)
    lab["properties"]["test"]["description"] = "An analyte name of the contract or a LOINC code for one."
    lab["properties"]["unit"]["description"] = "A UCUM unit; other units of the same quantity are converted."
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "alemwatch patient file"
    return schema
