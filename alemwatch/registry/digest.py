"""A fingerprint of everything the registry stores about a patient's assessment (alert
keys and severities, worklist items, the summary). Computed the same way from an `assess`
result (per patient) and from the bulk arrays (all patients at once), so the sweep can tell
which patients need their stored state rewritten without rendering anyone.

Each stored fact becomes a row of small integers; a row's hash is splitmix64 of its items
combined in order; a patient's digest is the sum of its row hashes modulo 2**64 (so row order
does not matter, as in the stored tables)."""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from alemwatch.core import bulk
from alemwatch.core.bulk import BulkAssessment

MASK = (1 << 64) - 1
U64 = npt.NDArray[np.uint64]
TAGS = {"finding": 1, "deviation": 2, "task": 3, "herpes": 4, "eligibility": 5, "reason": 6, "summary": 7, "course": 8}


def name_code(name: str | None) -> int:
    return 0 if name is None else zlib.crc32(name.encode())


def _ordinal(iso: str | None) -> int:
    return dt.date.fromisoformat(iso).toordinal() if iso else 0


def _mix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def row_hash(items: Sequence[int]) -> int:
    h = 0
    for item in items:
        h = _mix((h ^ (item & MASK)) & MASK)
    return h


def _mix_np(x: U64) -> U64:
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def row_hash_np(columns: Sequence[npt.NDArray[Any]]) -> U64:
    h = np.zeros(len(columns[0]), dtype=np.uint64)
    for column in columns:
        h = _mix_np(h ^ column.astype(np.int64).view(np.uint64))
    return h


def result_rows(
    result: dict[str, Any], on_prophylaxis: bool, as_of: dt.date, lookahead: dt.timedelta
) -> list[list[int]]:
    """The stored facts of one assessment as integer rows (see module docstring)."""
    rows: list[list[int]] = []
    for f in result["findings"]:
        rules = sum(_mix(name_code(r)) for r in set(f["rules"])) & MASK
        rows.append([TAGS["finding"], name_code(f["condition"]), name_code(f["severity"]), name_code(f["rule"]), rules])
    for d in result["deviations"]:
        rows.append([TAGS["deviation"], name_code(d["code"]), _ordinal(d["date"])])
    horizon = (as_of + lookahead).toordinal()
    for t in result["monitoring"]["tasks"]:
        start = _ordinal(t["window"][0])
        if t["status"] != "done" and start <= horizon:
            rows.append([TAGS["task"], name_code(t["task"]), _ordinal(t["due"])])
    herpes = result["prophylaxis"]["herpes"]
    rows.append([TAGS["herpes"], name_code(herpes["status"]), _ordinal(herpes["earliest_stop"]), int(on_prophylaxis)])
    eligibility = result.get("eligibility")
    if eligibility:
        start = _ordinal(eligibility.get("planned_course_start")) if "planned_course_start" in eligibility else 0
        rows.append([TAGS["eligibility"], name_code(eligibility["status"]), int(start >= as_of.toordinal())])
        for code in {r["code"] for r in eligibility["reasons"] if r.get("level") != "caution"}:
            rows.append([TAGS["reason"], name_code(code)])
    rows.append([TAGS["summary"], _ordinal(result["monitoring"]["until"]), len(result["courses"])])
    return rows


def digest_result(result: dict[str, Any], on_prophylaxis: bool, as_of: dt.date, lookahead: dt.timedelta) -> int:
    return sum(row_hash(row) for row in result_rows(result, on_prophylaxis, as_of, lookahead)) & MASK


def _codes(names: Sequence[str]) -> npt.NDArray[np.int64]:
    return np.asarray([name_code(n) for n in names], dtype=np.int64)


def _add(total: U64, patients: npt.NDArray[Any], hashes: U64) -> None:
    with np.errstate(over="ignore"):
        np.add.at(total, patients.astype(np.int64), hashes)


def const(value: int, rows: int) -> npt.NDArray[np.int64]:
    return np.full(rows, value, dtype=np.int64)


def digest_bulk(
    ba: BulkAssessment, on_prophylaxis: npt.NDArray[np.bool_], planned_start: npt.NDArray[Any], lookahead: dt.timedelta
) -> U64:
    """The digest of every patient of a bulk assessment (equal to `digest_result` of each)."""
    n = len(ba.patient_ids)
    total = np.zeros(n, dtype=np.uint64)
    # findings: the set of fired rules hashes to a sum of mixed rule codes
    rule_codes = _codes(ba.rule_ids)
    fired = _mix_np(rule_codes[ba.finding_rules].view(np.uint64))
    starts = ba.finding_rules_offsets[:-1]
    rules_sum = np.add.reduceat(fired, starts) if len(fired) else np.zeros(0, dtype=np.uint64)
    rules_sum = np.where(ba.finding_rules_offsets[1:] > starts, rules_sum, np.uint64(0)).astype(np.uint64)
    f = len(ba.finding_patient)
    cond, sev = _codes(bulk.CONDITIONS)[ba.finding_condition], _codes(bulk.SEVERITY_NAMES)[ba.finding_severity]
    _add(
        total,
        ba.finding_patient,
        row_hash_np([const(TAGS["finding"], f), cond, sev, rule_codes[ba.finding_rule], rules_sum.view(np.int64)]),
    )
    d = len(ba.dev_patient)
    _add(
        total,
        ba.dev_patient,
        row_hash_np([const(TAGS["deviation"], d), _codes(bulk.DEVIATION_CODES)[ba.dev_code], ba.dev_date]),
    )
    horizon = (ba.as_of + lookahead).toordinal()
    open_task = (ba.task_status != bulk.STATUS_NAMES.index("done")) & (ba.task_window_start <= horizon)
    t = int(open_task.sum())
    task_codes = _codes(ba.task_names)[ba.task_kind[open_task]]
    _add(total, ba.task_patient[open_task], row_hash_np([const(TAGS["task"], t), task_codes, ba.task_due[open_task]]))
    herpes = _codes(bulk.HERPES_NAMES)[ba.prophylaxis_status]
    everyone = np.arange(n)
    _add(
        total,
        everyone,
        row_hash_np([const(TAGS["herpes"], n), herpes, ba.earliest_stop, on_prophylaxis.astype(np.int64)]),
    )
    has = ba.eligibility_status >= 0
    status = _codes(bulk.ELIGIBILITY_NAMES)[np.where(has, ba.eligibility_status, 0)]
    future = (planned_start >= ba.as_of.toordinal()).astype(np.int64)
    _add(total, everyone[has], row_hash_np([const(TAGS["eligibility"], int(has.sum())), status[has], future[has]]))
    not_caution = ba.reason_level != bulk.LEVELS.index("caution")
    reason_patient, reason_code = ba.reason_patient[not_caution], _codes(ba.reason_codes)[ba.reason_code[not_caution]]
    unique = (
        np.unique(np.stack([reason_patient.astype(np.int64), reason_code]), axis=1)
        if len(reason_code)
        else np.zeros((2, 0), np.int64)
    )
    _add(total, unique[0], row_hash_np([const(TAGS["reason"], unique.shape[1]), unique[1]]))
    _add(total, everyone, row_hash_np([const(TAGS["summary"], n), ba.until, ba.course_count]))
    return total
