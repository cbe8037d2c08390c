"""fhir.resources validation of incoming resources, made fast for the regular ones a lab feed sends.

fhir.resources builds a pydantic model of every element of a resource and runs its Python
validators on each: about 90 us an Observation, half of what a FHIR ingest costs. What it
checks falls in two parts:

- the *structure*: which elements are present and where, object or list, how many items,
  the JSON type of every value, nulls in lists, required elements and the single value of a
  choice (`value[x]`), and the `resourceType` that chooses each model. All of it is read off
  the resource's *shape*: its keys, nesting and list lengths, the JSON type of every value,
  and the value of every `resourceType`;
- every primitive *value* against the FHIR type its model gives that element (id, code,
  dateTime, decimal, uri...): fhir.resources' own annotated types, each checked alone.

(fhir.resources has no validator that reads one element's value beside another's: its model
validators are the structural ones above.) So a shape fhir.resources has accepted once is
accepted again, and what is left to check is
each value, with the same fhir.resources type the model would check it with (through a
pydantic TypeAdapter). `validate` does exactly that: a resource whose shape was accepted
before has its values checked one by one; any other resource (a new shape, one that cannot be
split so, or one with a value that fails) is validated by the full model, whose error is the
one reported. tests/test_fhir_validation.py holds that the two agree on accepting and refusing.
"""

from __future__ import annotations

import threading
import types
import typing
from typing import Any

from fhir_core.types import FhirBase, FhirElementOrResourceBase
from pydantic import TypeAdapter

from alemwatch.fhir.models import model_for

MAX_SHAPES = 4096  # distinct shapes remembered; beyond it the memory is cleared and refilled
MAX_VALUES = 50_000  # (type, value) pairs remembered as valid (codes, systems, units repeat)

_OPEN, _CLOSE = object(), object()  # markers in a shape: an object starts and ends
_NEW = object()  # a shape not seen yet


class _Unsplittable(Exception):
    """A resource whose shape this module does not split (the full model validates it)."""


def _shape(value: dict[str, Any], tokens: list[Any], leaves: list[Any]) -> None:
    """Append the shape of an object to `tokens` and its non-null primitive values to `leaves`,
    both in the order of its keys. Unambiguous: a key (a str) is followed by `_OPEN` (an object),
    an int (a list of that many items), a type (a primitive value) or, after `resourceType`, a
    str (its value)."""
    for key, item in value.items():
        tokens.append(key)
        kind = type(item)
        if kind is dict:
            tokens.append(_OPEN)
            _shape(item, tokens, leaves)
            tokens.append(_CLOSE)
        elif kind is list:
            tokens.append(len(item))
            for element in item:  # (walked here, as the object above: this runs for every resource received)
                element_kind = type(element)
                if element_kind is dict:
                    tokens.append(_OPEN)
                    _shape(element, tokens, leaves)
                    tokens.append(_CLOSE)
                elif element_kind is list:
                    raise _Unsplittable  # a list in a list is no FHIR element
                else:
                    tokens.append(element_kind)
                    if element is not None:
                        leaves.append(element)
        elif key == "resourceType":
            if kind is not str:
                raise _Unsplittable
            tokens.append(item)
        else:
            tokens.append(kind)
            if item is not None:
                leaves.append(item)


def _fields(model: Any) -> dict[str, Any]:
    """A model's fields by every name a JSON key may give them (alias and Python name)."""
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        out[name] = info
        if info.alias:
            out[info.alias] = info
    return out


_FIELDS: dict[Any, dict[str, Any]] = {}
_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _element(annotation: Any) -> tuple[bool, Any]:
    """(is a list, the element's annotation) of a field's annotation, Optional taken off."""

    def optional_off(tp: Any) -> Any:
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                raise _Unsplittable  # a union of types: the full model decides
            return args[0]
        return tp

    tp = optional_off(annotation)
    if typing.get_origin(tp) in (list, typing.List):  # noqa: UP006 - fhir.resources' spelling
        return True, optional_off(typing.get_args(tp)[0])
    return False, tp


def _leaf_checks(model: Any, value: dict[str, Any], out: list[TypeAdapter[Any]]) -> None:
    """The TypeAdapter of every non-null primitive value of `value` (a valid `model`), in the
    order `_shape` gives them."""
    fields = _FIELDS.get(model)
    if fields is None:
        fields = _FIELDS[model] = _fields(model)
    for key, item in value.items():
        if key == "resourceType" and type(item) is str:
            continue
        info = fields.get(key)
        if info is None or info.metadata:
            raise _Unsplittable  # (a constraint outside the annotation: the full model decides)
        many, tp = _element(info.annotation)
        items = item if type(item) is list else [item]
        if many != (type(item) is list):
            raise _Unsplittable
        for element in items:
            if element is None:
                continue
            if isinstance(tp, type) and issubclass(tp, FhirBase):
                if issubclass(tp, FhirElementOrResourceBase) or type(element) is not dict:
                    raise _Unsplittable  # a resource inside (its type chosen by value), or JSON text
                _leaf_checks(tp.get_model_klass(), element, out)
            elif tp is bool or typing.get_origin(tp) is typing.Annotated:  # (boolean is a plain bool)
                adapter = _ADAPTERS.get(tp)
                if adapter is None:
                    adapter = _ADAPTERS[tp] = TypeAdapter(tp)
                out.append(adapter)
            else:
                raise _Unsplittable(f"{model.__name__}.{key}: {tp!r}")


_shapes: dict[tuple[Any, ...], tuple[TypeAdapter[Any], ...] | None] = {}  # None: never split
_valid: set[tuple[int, type, Any]] = set()  # (id of the adapter, type, value) found valid
_lock = threading.Lock()


def validate(resource: dict[str, Any]) -> None:
    """Validate a resource (a dict with a known `resourceType`) as fhir.resources does; raises
    what its model raises (pydantic's ValidationError, or the plain exceptions it gives up with)."""
    model = model_for(resource["resourceType"])
    tokens: list[Any] = []
    leaves: list[Any] = []
    try:
        _shape(resource, tokens, leaves)
    except (_Unsplittable, RecursionError):
        model.model_validate(resource)
        return
    key = tuple(tokens)
    checks = _shapes.get(key, _NEW)
    if checks is _NEW:
        model.model_validate(resource)  # a new shape: the full model
        _learn(key, model, resource, len(leaves))
        return
    if not isinstance(checks, tuple) or not _values_valid(checks, leaves):
        model.model_validate(resource)


def _learn(key: tuple[Any, ...], model: Any, resource: dict[str, Any], count: int) -> None:
    """Remember an accepted shape with the check of each of its values (or None: never split)."""
    checks: list[TypeAdapter[Any]] = []
    try:
        _leaf_checks(model, resource, checks)
    except (_Unsplittable, RecursionError, ImportError, AttributeError):
        found: tuple[TypeAdapter[Any], ...] | None = None
    else:
        found = tuple(checks) if len(checks) == count else None
    with _lock:
        if len(_shapes) >= MAX_SHAPES:
            _shapes.clear()
        _shapes[key] = found


def _values_valid(checks: tuple[TypeAdapter[Any], ...], leaves: list[Any]) -> bool:
    valid = _valid
    for adapter, value in zip(checks, leaves, strict=True):
        seen = (id(adapter), type(value), value)
        if seen in valid:
            continue
        try:
            adapter.validate_python(value)
        except Exception:  # noqa: BLE001 - whatever it is, the full model decides and says why
            return False
        if len(valid) >= MAX_VALUES:
            valid.clear()
        valid.add(seen)
    return True
