"""Invariants that must hold for every patient and every wording (hypothesis)."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from alemwatch.core.assess import assess
from alemwatch.core.chart import add_months
from alemwatch.core.findings import triage_engine
from alemwatch.core.patient import PatientFileError, parse_patient
from alemwatch.protocol.load import load_protocol
from alemwatch.protocol.model import URGENCY_RANK

PROTOCOL = load_protocol("us")
ENGINE = triage_engine(PROTOCOL)
CASES = Path(__file__).parent / "cases" / "triage"
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _rank(urgency: str) -> int:
    return URGENCY_RANK[urgency]


def _corpus(min_urgency: str) -> list[dict[str, Any]]:
    entries = []
    for path in sorted(CASES.glob("*.json")):
        for entry in json.loads(path.read_text())["cases"]:
            floor = entry.get("urgency") or entry.get("urgency_at_least")
            if floor and _rank(floor) >= _rank(min_urgency):
                entries.append(entry)
    return entries


RED_FLAGS = _corpus("urgent")


@st.composite
def infusion_history(draw: st.DrawFn) -> list[dt.date]:
    start = draw(st.dates(min_value=dt.date(2015, 1, 1), max_value=dt.date(2026, 1, 1)))
    dates: list[dt.date] = []
    for course in range(draw(st.integers(1, 4))):
        if course:
            start = dates[-1] + dt.timedelta(days=draw(st.integers(2, 900)))
        days = draw(st.integers(1, 5))
        dates += [start + dt.timedelta(days=d) for d in range(days)]
    return dates


def _patient(infusions: list[dt.date], **extra: Any) -> dict[str, Any]:
    return {
        "id": "p",
        "sex": "female",
        "infusions": [{"date": d.isoformat(), "premedication": True, "observation_minutes": 130} for d in infusions],
        **extra,
    }


@FAST
@given(infusions=infusion_history(), offset=st.integers(-400, 3000))
def test_every_monitoring_date_lies_between_first_infusion_and_48_months_after_last(
    infusions: list[dt.date], offset: int
) -> None:
    as_of = infusions[-1] + dt.timedelta(days=offset)
    out = assess(parse_patient(_patient(infusions), PROTOCOL), PROTOCOL, as_of)
    included = [d for d in infusions if d <= as_of]
    tasks = out["monitoring"]["tasks"]
    if not included:
        assert tasks == [] and out["monitoring"]["until"] is None
        return
    until = add_months(included[-1], 48)
    assert out["monitoring"]["until"] == until.isoformat()
    dues = [dt.date.fromisoformat(t["due"]) for t in tasks]
    assert all(included[0] < due <= until for due in dues)
    assert dues == sorted(dues)
    statuses = {t["status"] for t in tasks}
    assert statuses <= {"done", "due", "overdue", "upcoming"}


@FAST
@given(
    infusions=infusion_history(),
    history=st.lists(st.integers(5, 600), max_size=4),
    low=st.integers(0, 600),
    delta=st.integers(0, 400),
    days_after=st.integers(0, 800),
)
def test_a_lower_platelet_count_never_yields_a_lower_urgency(
    infusions: list[dt.date], history: list[int], low: int, delta: int, days_after: int
) -> None:
    last = infusions[-1]

    def worst(value: int) -> int:
        labs = [
            {
                "test": "platelets",
                "value": v,
                "unit": "10*9/L",
                "date": (last + dt.timedelta(days=30 * (n + 1))).isoformat(),
            }
            for n, v in enumerate(history)
        ]
        day = last + dt.timedelta(days=30 * (len(history) + 1) + days_after)
        labs.append({"test": "platelets", "value": value, "unit": "10*9/L", "date": day.isoformat()})
        out = assess(parse_patient(_patient(infusions, labs=labs), PROTOCOL), PROTOCOL, day)
        return max((_rank(f["severity"]) for f in out["findings"]), default=-1)

    assert worst(low) >= worst(low + delta)


NEGATIONS = [
    "no {}",
    "I don't have {}",
    "without {}",
    "not {}",
    "denies {}",
    "no sign of {}",
    "never had {}",
]


@FAST
@given(
    entry=st.sampled_from(_corpus("soon")),
    form=st.sampled_from(NEGATIONS),
    prefix=st.sampled_from(["", "tired today. ", "feeling ok, "]),
)
def test_adding_a_negation_never_raises_urgency(entry: dict[str, Any], form: str, prefix: str) -> None:
    text = entry["text"]
    # A text that opens with a denial of its own ("not had a headache before this, now ...") would
    # read as a double negation.
    assume(not re.match(r"(not|no|never|without|nothing|none|dont|don't|didnt|didn't|havent|haven't)\b", text.lower()))
    days = entry.get("days_since_infusion")
    plain_text, negated_text = prefix + text, prefix + form.format(text)
    # Where the form's own words make a symptom with the text's first words ("no air" in "no air
    # hunger", "not breathing" in "not breathing is harder"), that is a new mention, not a denial.
    form_words = {w.replace("'", "") for w in re.findall(r"[a-z']+", form.replace("{}", " ").lower())}
    before = {hit.matched for hit in ENGINE.hits(plain_text, days)[0]}
    made = {hit.matched for hit in ENGINE.hits(negated_text, days)[0]} - before
    assume(not any(set(matched.split()) & form_words for matched in made))
    plain = ENGINE.triage(plain_text, days).urgency
    negated = ENGINE.triage(negated_text, days).urgency
    assert _rank(negated) <= _rank(plain)


FILLER = st.lists(
    st.sampled_from(
        [
            "I went to work today.",
            "Had porridge for breakfast.",
            "The weather is grey.",
            "My daughter visited.",
            "Slept ok.",
            "Took the dog for a walk.",
            "I am writing this on my phone.",
            "Thanks for checking in,",
            "Just wanted to let you know:",
            "anyway",
            "also",
            "and then",
            "this morning",
            "since yesterday",
        ]
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(entry=st.sampled_from(RED_FLAGS), before=FILLER, after=FILLER)
def test_each_red_flag_keeps_its_urgency_inside_longer_text(
    entry: dict[str, Any], before: list[str], after: list[str]
) -> None:
    days = entry.get("days_since_infusion")
    alone = ENGINE.triage(entry["text"], days).urgency
    longer = ENGINE.triage(" ".join([*before, entry["text"], *after]), days).urgency
    assert _rank(longer) >= _rank(alone)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=400), days=st.none() | st.integers(0, 5000))
def test_triage_reads_any_text_without_crashing(text: str, days: int | None) -> None:
    assume(text.strip())
    result = ENGINE.triage(text, days)
    assert result.urgency in URGENCY_RANK


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    data=st.fixed_dictionaries(
        {"id": st.text(min_size=1, max_size=5)},
        optional=dict.fromkeys(
            ("labs", "infusions", "screening", "sex", "birth_date", "exams", "symptoms", "unknown"), JSON
        ),
    )
)
def test_any_malformed_patient_file_is_rejected_with_a_field_or_accepted(
    data: dict[str, Any],
) -> None:
    try:
        patient = parse_patient(data, PROTOCOL)
    except PatientFileError as exc:
        assert exc.field and exc.problem and "\n" not in str(exc)
        return
    assess(patient, PROTOCOL, dt.date(2026, 1, 1))


@settings(max_examples=500, deadline=None)
@given(day=st.dates(min_value=dt.date(1950, 1, 1), max_value=dt.date(2200, 12, 31)), months=st.integers(0, 600))
def test_month_arithmetic_is_dateutils(day: dt.date, months: int) -> None:
    from dateutil.relativedelta import relativedelta

    assert add_months(day, months) == day + relativedelta(months=months)
