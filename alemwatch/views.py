"""Human views (Rich) of the command outputs. Placeholder until the full views land."""

from __future__ import annotations

import json
from typing import Any


def show_assessment(result: dict[str, Any], all_tasks: bool = False) -> None:
    print(json.dumps(result, indent=2))


def show_triage(result: dict[str, Any]) -> None:
    print(json.dumps(result, indent=2))


def show_protocol(protocol: Any, section: str | None) -> None:
    print(protocol.model_dump_json(indent=2))
