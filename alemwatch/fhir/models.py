"""fhir.resources' models by resource type, imported on first use (they are slow to import).

fhir.resources 8 ships R5 at its top level and R4B (4.3.0) beside it, but no 4.0.1 package;
the elements this interface reads and writes are the same in R4 and R4B, so R4B validates
them. (`codes.FHIR_VERSION` is what the CapabilityStatement declares.)"""

from __future__ import annotations

import functools
import importlib
from typing import Any


@functools.cache
def model_for(resource_type: str) -> Any:
    module = importlib.import_module(f"fhir.resources.R4B.{resource_type.lower()}")
    return getattr(module, resource_type)


def validate(resource: dict[str, Any]) -> Any:
    """The validated model of an emitted resource (raises pydantic's ValidationError)."""
    return model_for(resource["resourceType"]).model_validate(resource)
