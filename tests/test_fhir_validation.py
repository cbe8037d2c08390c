"""The fast validator of incoming resources (`alemwatch.fhir.validation`) accepts exactly what
fhir.resources' full models accept, and refuses with the full model's error.

It remembers shapes fhir.resources accepted and then checks only the values; so every test
here first teaches it the valid resources a hospital sends, then changes one value or one
element of them (hypothesis) and holds that both validators agree."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from alemwatch.fhir import inbound, validation
from alemwatch.fhir.models import model_for
from tests import fhir_helpers as fh

FULL_MODEL_ERRORS = (ValidationError, KeyError, TypeError, ValueError, AttributeError, RecursionError)


def _rich_resources() -> list[dict[str, Any]]:
    """Resources beyond the hospital Bundle's: extensions, a primitive's `_element`, lists of
    primitives, a coded value, reference ranges, notes."""
    return [
        fh.patient(
            "p-1",
            name=[{"family": "Example", "given": ["Ann", "B."]}],
            birthDate="1985-04-12",
            _birthDate={"extension": [{"url": "http://example.org/precision", "valueString": "day"}]},
            extension=[{"url": "http://example.org/flag", "valueBoolean": True}],
            active=True,
        ),
        fh.lab(
            "p-1",
            "777-3",
            212,
            "10*9/L",
            "2025-01-02T07:45:00+01:00",
            ref=(150, 400),
            note=[{"text": "repeat in a month"}],
            interpretation=[{"coding": [{"system": "http://example.org/i", "code": "N"}]}],
            issued="2025-01-02T09:00:00Z",
        ),
        {
            "resourceType": "Observation",
            "id": "o-coded",
            "status": "final",
            "code": {"coding": [{"system": fh.LOINC, "code": "5804-0"}]},
            "subject": {"reference": "Patient/p-1"},
            "effectivePeriod": {"start": "2025-01-02", "end": "2025-01-03"},
            "valueCodeableConcept": {"text": "negative"},
            "component": [{"code": {"text": "part"}, "valueInteger": 3}],
        },
    ]


def known_valid() -> list[dict[str, Any]]:
    resources = [e["resource"] for e in fh.hospital_bundle()["entry"]] + _rich_resources()
    for resource in resources:
        model_for(resource["resourceType"]).model_validate(resource)  # all valid to begin with
    return resources


VALID = known_valid()


def full_accepts(resource: dict[str, Any]) -> bool:
    try:
        model_for(resource["resourceType"]).model_validate(resource)
    except FULL_MODEL_ERRORS:
        return False
    return True


def fast_accepts(resource: dict[str, Any]) -> bool:
    try:
        validation.validate(resource)
    except FULL_MODEL_ERRORS:
        return False
    return True


@pytest.fixture(autouse=True)
def taught() -> None:
    """Every valid resource validated once more: their shapes are known from here on."""
    for resource in VALID:
        validation.validate(resource)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every element below the root (keys and list indexes)."""
    out = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if key == "resourceType" and not path:
            continue
        out.append((*path, key))
        out += _paths(item, (*path, key))
    return out


def _set(resource: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    target: Any = resource
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


# Values that are right for one FHIR type and wrong for another.
VALUES = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "final",
            "2025-01-02",
            "2025-02-30",
            "2025-13-01",
            "2025-01-02T07:45:00",
            "2025-01-02T07:45:00+01:00",
            "2025",
            "1.5",
            "1e400",
            "true",
            "http://loinc.org",
            "a b",
            "Patient/p-1",
            "x" * 70,
            "\x00",
            0,
            1,
            -1,
            2**31,
            2**63,
            1.5,
            -0.0,
            1e300,
            True,
            False,
            None,
        ]
    ),
    st.text(max_size=12),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_one_value_changed_both_validators_agree(data: st.DataObject) -> None:
    original = data.draw(st.sampled_from(VALID))
    resource = copy.deepcopy(original)
    paths = [p for p in _paths(resource) if not isinstance(_get(resource, p), dict | list)]
    path = data.draw(st.sampled_from(paths))
    _set(resource, path, data.draw(VALUES))
    assert fast_accepts(resource) == full_accepts(resource), (path, resource)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_one_element_reshaped_both_validators_agree(data: st.DataObject) -> None:
    """An element removed, wrapped in a list, unwrapped, emptied, or another element added."""
    resource = copy.deepcopy(data.draw(st.sampled_from(VALID)))
    path = data.draw(st.sampled_from(_paths(resource)))
    current = _get(resource, path)
    change = data.draw(st.sampled_from(["remove", "wrap", "unwrap", "empty", "null", "add"]))
    if change == "remove":
        parent = _get(resource, path[:-1])
        del parent[path[-1]]
    elif change == "wrap":
        _set(resource, path, [current])
    elif change == "unwrap" and isinstance(current, list) and current:
        _set(resource, path, current[0])
    elif change == "empty":
        _set(resource, path, type(current)() if isinstance(current, dict | list) else "")
    elif change == "null":
        _set(resource, path, None)
    elif change == "add" and isinstance(current, dict):
        current[data.draw(st.sampled_from(["text", "extension", "valueString", "bogus", "_value", "id"]))] = data.draw(
            VALUES
        )
    assert fast_accepts(resource) == full_accepts(resource), (path, change, resource)


def _get(resource: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        resource = resource[key]
    return resource


def test_a_wrong_value_in_a_known_shape_is_refused_with_the_full_models_error() -> None:
    """The shape of a lab result is known; its date is not a date: the same error as fhir.resources'."""
    bad = copy.deepcopy(next(r for r in VALID if r["resourceType"] == "Observation" and "effectiveDateTime" in r))
    bad["effectiveDateTime"] = "2025-02-30"
    with pytest.raises(ValidationError) as fast:
        validation.validate(bad)
    with pytest.raises(ValidationError) as full:
        model_for("Observation").model_validate(bad)
    assert fast.value.errors(include_url=False) == full.value.errors(include_url=False)
    with pytest.raises(inbound.FhirInputError) as refused:
        inbound.validate_resource(bad, "Bundle.entry[1].resource")
    assert refused.value.issues[0].expression == "Bundle.entry[1].resource.effectiveDateTime"


def test_a_known_shape_is_checked_value_by_value_without_the_full_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """What makes it fast: a resource of a shape accepted before never reaches the full model."""
    resource = copy.deepcopy(next(r for r in VALID if r["resourceType"] == "Observation" and "valueQuantity" in r))
    resource["effectiveDateTime"] = "2026-11-30T08:00:00+01:00"
    resource["valueQuantity"]["value"] = 4.25
    model = model_for(resource["resourceType"])

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the full model was called")

    monkeypatch.setattr(model, "model_validate", refuse)
    validation.validate(resource)
