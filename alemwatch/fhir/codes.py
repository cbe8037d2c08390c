"""Terminology the FHIR interface speaks: code systems, the drugs it recognises, and the
project's own extensions. Analyte LOINC codes and units live in the protocol (`analytes`);
what is here names medicines and vaccines, not clinical rules."""

from __future__ import annotations

import re

FHIR_VERSION = "4.0.1"  # R4; resources are validated with fhir.resources' R4B models (R4-compatible here)

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
SNOMED = "http://snomed.info/sct"
CVX = "http://hl7.org/fhir/sid/cvx"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
DETECTED_ISSUE_CATEGORY = ACT_CODE
FLAG_CATEGORY = "http://terminology.hl7.org/CodeSystem/flag-category"

# The project's own names, for what no standard code system says.
BASE = "https://alemwatch.org/fhir"
EXT_SCREENING = f"{BASE}/StructureDefinition/screening"
EXT_PREMEDICATION = f"{BASE}/StructureDefinition/premedication"
EXT_OBSERVATION_MINUTES = f"{BASE}/StructureDefinition/observation-minutes"
EXT_REACTION = f"{BASE}/StructureDefinition/infusion-reaction"
EXT_LIVE_VACCINE = f"{BASE}/StructureDefinition/live-vaccine"
EXT_TASK_STATUS = f"{BASE}/StructureDefinition/monitoring-task-status"
CS_SYMPTOM = f"{BASE}/CodeSystem/observation"  # code `symptom-report`: a report in the patient's words
CS_TASK = f"{BASE}/CodeSystem/monitoring-task"  # the contract's task names (cbc, creatinine, ...)
CS_CONDITION = f"{BASE}/CodeSystem/condition"  # the contract's condition codes (itp, anti_gbm, ...)
CS_DEVIATION = f"{BASE}/CodeSystem/deviation"
CS_EXAM = f"{BASE}/CodeSystem/exam"
SYMPTOM_CODE = "symptom-report"
LAB_ID_SYSTEM = f"{BASE}/lab-result-id"

# Alemtuzumab: RxNorm ingredient 117055, RxNorm Lemtrada 12 mg/1.2 mL injection 1594660 (and
# its branded pack 1594664), ATC L04AG06 (L04AA34 before the 2023 ATC change).
ALEMTUZUMAB_CODES = {
    (RXNORM, "117055"),
    (RXNORM, "1594660"),
    (RXNORM, "1594664"),
    (ATC, "L04AG06"),
    (ATC, "L04AA34"),
}
ALEMTUZUMAB_TEXT = re.compile(r"\b(alemtuzumab|lemtrada)\b", re.IGNORECASE)
ALEMTUZUMAB_CODING = {"system": RXNORM, "code": "1594660", "display": "alemtuzumab 10 MG/ML Injection [Lemtrada]"}

# Corticosteroid premedication on an infusion day (US-PI 2.2: 1 g methylprednisolone).
PREMEDICATION_CODES = {(RXNORM, "6902"), (ATC, "H02AB04"), (RXNORM, "5492"), (ATC, "H02AB09"), (RXNORM, "3264")}
PREMEDICATION_TEXT = re.compile(r"\b(methylprednisolone|solu-?medrol|hydrocortisone|dexamethasone)\b", re.IGNORECASE)

# Herpes prophylaxis: aciclovir and its pro-drugs (US-PI 5.8).
HERPES_DRUGS = {
    (RXNORM, "281"): "aciclovir",
    (ATC, "J05AB01"): "aciclovir",
    (RXNORM, "73645"): "valaciclovir",
    (ATC, "J05AB11"): "valaciclovir",
    (RXNORM, "68099"): "famciclovir",
    (ATC, "J05AB09"): "famciclovir",
}
HERPES_TEXT = re.compile(r"\b(acyclovir|aciclovir|valacyclovir|valaciclovir|famciclovir)\b", re.IGNORECASE)
HERPES_RXNORM = {"aciclovir": "281", "valaciclovir": "73645", "famciclovir": "68099"}

# Live vaccines by CVX code (CDC CVX table): MMR, varicella, MMRV, zoster live, yellow fever,
# oral polio, oral typhoid, BCG, rotavirus, live intranasal influenza, cholera live, dengue, smallpox.
LIVE_VACCINE_CVX = {
    "03",
    "04",
    "05",
    "06",
    "07",
    "21",
    "94",
    "121",
    "37",
    "02",
    "25",
    "19",
    "116",
    "119",
    "122",
    "111",
    "149",
    "174",
    "56",
    "75",
}
LIVE_VACCINE_TEXT = re.compile(
    r"\b(live|mmr|measles|mumps|rubella|varicella|chickenpox|zostavax|yellow fever|bcg|rotavirus|oral polio|opv|"
    r"oral typhoid|ty21a|laiv|flumist|intranasal)\b",
    re.IGNORECASE,
)


def coded(codings: list[dict[str, str]] | None, table: set[tuple[str, str]] | dict[tuple[str, str], str]) -> bool:
    return any((c.get("system"), c.get("code")) in table for c in codings or [])
