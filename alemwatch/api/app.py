"""HTTP API: the clinical core behind FastAPI (OpenAPI at /docs). Thin: no clinical logic."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import Body, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from alemwatch import __version__
from alemwatch.core.assess import assess
from alemwatch.core.findings import triage_engine
from alemwatch.core.patient import PatientFileError, parse_patient
from alemwatch.protocol.load import load_protocol

app = FastAPI(
    title="alemwatch",
    version=__version__,
    description="Safety programme for alemtuzumab (Lemtrada): assessment and symptom triage.",
)
Jurisdiction = Literal["us", "eu"]


class TriageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=5000, description="What the patient reports, in their own words.")
    days_since_infusion: int | None = Field(default=None, ge=0, le=100000)
    jurisdiction: Jurisdiction = "us"


@app.exception_handler(PatientFileError)
async def patient_file_error(request: Request, exc: PatientFileError) -> JSONResponse:
    return JSONResponse(
        status_code=422,
        content={"detail": [{"loc": exc.field.split("."), "msg": exc.problem, "field": exc.field}]},
    )


@app.get("/api/health")
def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@app.post("/api/assess")
def assess_patient(
    patient: Annotated[
        dict[str, Any],
        Body(description="A contract patient file (see `alemwatch schema patient`)."),
    ],
    as_of: Annotated[dt.date | None, Query(description="Assess as of this date; default today.")] = None,
    jurisdiction: Annotated[Jurisdiction, Query()] = "us",
) -> dict[str, Any]:
    protocol = load_protocol(jurisdiction)
    return assess(parse_patient(patient, protocol), protocol, as_of or dt.date.today())


@app.post("/api/triage")
def triage(request: TriageRequest) -> dict[str, object]:
    engine = triage_engine(load_protocol(request.jurisdiction))
    return engine.triage(request.text, request.days_since_infusion).to_json()
