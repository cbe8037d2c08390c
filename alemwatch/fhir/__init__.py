"""Mapping between the contract's records and FHIR R4 resources (fhir.resources models)."""
