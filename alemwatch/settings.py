"""One typed settings object, read from the environment (ALEMWATCH_*)."""

from __future__ import annotations

import functools
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "dev-only-secret-change-me"


class CdsClient(BaseModel):
    """A CDS client (an EHR) whose signed JWTs the CDS Hooks service accepts."""

    model_config = ConfigDict(extra="forbid")
    jwks_url: str = Field(pattern=r"^https?://", description="Where the client publishes its JSON Web Key Set.")
    account: str = Field(min_length=1, description="The alemwatch care-team account its calls are made as.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ALEMWATCH_", extra="ignore")

    environment: Literal["development", "production", "test"] = "development"
    database_url: str = Field(default="sqlite:///./alemwatch.db", description="SQLAlchemy URL; SQLite by default.")
    secret_key: str = Field(default=DEV_SECRET, description="Signs session cookies and CSRF tokens.")
    jurisdiction: Literal["us", "eu"] = "us"
    session_hours: int = Field(default=12, gt=0)
    token_days: int = Field(default=30, gt=0)
    cookie_secure: bool = False
    login_attempts_per_window: int = Field(default=5, gt=0, description="Failed logins allowed per user and window.")
    login_window_seconds: int = Field(default=300, gt=0)
    max_body_bytes: int = Field(default=5 * 1024 * 1024, gt=0)
    audit_reads: bool = True
    cds_fhir_servers: list[str] = Field(
        default_factory=list,
        description="FHIR base URLs the CDS Hooks service may fetch from (fhirServer); empty: any (development only).",
    )
    cds_clients: dict[str, CdsClient] = Field(
        default_factory=dict,
        description=(
            "CDS clients trusted by their signed JWT (CDS Hooks 2.0), by issuer (iss): "
            '{"https://ehr.example.org": {"jwks_url": "https://ehr.example.org/jwks", "account": "ehr-service"}}.'
        ),
    )
    public_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="This service's public base URL (the JWT audience of CDS calls); default: as the request says.",
    )
    cds_fetch_timeout_seconds: float = Field(default=10.0, gt=0, description="Calls to an EHR's FHIR or SMART server.")
    smart_issuers: list[str] = Field(
        default_factory=list, description="EHR FHIR base URLs (iss) allowed to launch alemwatch (SMART EHR launch)."
    )
    smart_client_id: str = Field(default="alemwatch", description="This app's client id at the EHRs.")

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment == "production":
            if self.secret_key == DEV_SECRET or len(self.secret_key) < 32:
                raise ValueError("ALEMWATCH_SECRET_KEY must be set to 32+ random characters in production")
            if not self.cds_fhir_servers:
                raise ValueError("ALEMWATCH_CDS_FHIR_SERVERS must list the EHR FHIR servers in production")
            if not self.cookie_secure:
                raise ValueError("ALEMWATCH_COOKIE_SECURE must be true in production (HTTPS only)")
        return self


@functools.cache
def get_settings() -> Settings:
    return Settings()
