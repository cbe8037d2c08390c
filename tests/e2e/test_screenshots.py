"""The demo cohort in the browser: what `make run` shows. Screenshots of Today and of a patient
page (the README's, when ALEMWATCH_UPDATE_SCREENSHOTS=1 — `make screenshots`), and the same
accessibility check on realistic data as on the test patients."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from alemwatch.demo import build_cohort
from alemwatch.protocol.load import load_protocol
from alemwatch.registry.refresh import refresh_patient
from alemwatch.store.db import transaction
from alemwatch.store.repo import save_patient_file
from tests.conftest import make_user
from tests.e2e.conftest import ROOT, TODAY, LiveServer, assert_accessible, login, screenshot

README_SHOTS = ROOT / "docs" / "screenshots"
COHORT = 60


@pytest.fixture(scope="module")
def demo_server(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path, run_server: Callable[[str, str], LiveServer]
) -> LiveServer:
    path = tmp_path_factory.mktemp("demo") / "demo.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    protocol = load_protocol("us")
    with transaction(url) as session:
        for record in build_cohort(COHORT, seed=7, as_of=TODAY):
            save_patient_file(session, record, protocol, source="demo")
            refresh_patient(session, record["id"], protocol, TODAY)
    make_user(url, "demo-nurse", "nurse")
    return run_server(url, "demo")


def keep_for_readme(shot: Path, name: str) -> None:
    if os.environ.get("ALEMWATCH_UPDATE_SCREENSHOTS") == "1":
        README_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, README_SHOTS / f"{name}.png")


def test_the_demo_cohort_on_today_and_a_patient_page(demo_server: LiveServer, new_page: Callable[..., Any]) -> None:
    page = new_page({"width": 1280, "height": 1000})
    login(page, demo_server, "demo-nurse")
    assert page.locator("#call-first ~ ol > li").count() >= 1, "the demo cohort has urgent findings"
    keep_for_readme(screenshot(page, demo_server, "today", full_page=False), "today")
    assert_accessible(page, "demo-today")

    page.locator("#call-first ~ ol > li a[href^='/patients/']").first.click()
    page.wait_for_url("**/patients/demo-*")
    assert page.locator("article.alert-card").count() >= 1
    keep_for_readme(screenshot(page, demo_server, "patient", full_page=False), "patient")
    page.locator("#trends").scroll_into_view_if_needed()
    screenshot(page, demo_server, "patient-trends", full_page=False)
    assert_accessible(page, "demo-patient")
