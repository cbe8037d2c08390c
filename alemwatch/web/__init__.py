"""The web app: server-rendered pages (Jinja2 + HTMX, every asset served from static/) for
the care team (Today, patients, forms) and for patients (the portal).

`create_app` mounts `router` and the static files, and installs `install_error_pages`."""

from fastapi import APIRouter

from alemwatch.web import auth, pages, records, smart
from alemwatch.web.context import STATIC_DIR
from alemwatch.web.errors import install_error_pages

router = APIRouter()
router.include_router(auth.router)
router.include_router(records.router)  # before pages: /patients/new must not be read as a patient id
router.include_router(pages.router)
router.include_router(smart.router)

__all__ = ["STATIC_DIR", "install_error_pages", "router"]
