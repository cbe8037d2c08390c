"""CDS Hooks 2.0 client authentication: the JWT the CDS client (the EHR) signs for each call.

The specification (Security, "Trusting CDS Clients"): every call carries
`Authorization: Bearer <JWT>` signed by the client (ES384 or RS384) with claims `iss`,
`aud` (the CDS Service endpoint), `exp` (at most five minutes ahead), `iat` and `jti` (never
used twice). alemwatch trusts the issuers listed in `ALEMWATCH_CDS_CLIENTS`, each with the URL
of its JSON Web Key Set and the alemwatch care-team account its calls are made as (so that
access rules and the audit trail name someone). The keys are fetched from that URL (and
kept; a new `kid` fetches again), never from a URL the token names (`jku`).

A used `jti` is stored (`cds_jwt_ids`, until its token expires) in the call's authorisation
transaction: a JWT sent again is refused by whichever worker gets it."""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass

import jwt
from jwt import PyJWKClient
from sqlalchemy import delete
from sqlalchemy.orm import Session

from alemwatch.settings import CdsClient
from alemwatch.store import models as m
from alemwatch.store.repo import dialect_insert

ALGORITHMS = ["ES384", "RS384"]  # the specification's
MAX_LIFETIME_SECONDS = 300  # exp no more than five minutes ahead (specification)
CLOCK_LEEWAY_SECONDS = 30  # POLICY: clock difference tolerated between the EHR and alemwatch
JWKS_CACHE_SECONDS = 300  # POLICY: how long fetched keys are kept before asking again

_key_sets: dict[str, PyJWKClient] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class Verified:
    account: str  # the alemwatch account the client's calls are made as
    issuer: str
    jti: str
    expires: dt.datetime


class CdsAuthError(ValueError):
    """Why a CDS client's JWT is refused (said in the 401)."""


def looks_like_jwt(token: str) -> bool:
    """A JWS compact serialisation (header.payload.signature), not one of alemwatch's own tokens."""
    return token.count(".") == 2 and token.startswith("eyJ")


def verify(token: str, clients: dict[str, CdsClient], audience: str, timeout: float) -> Verified:
    """A JWT that verifies, with the alemwatch account of its client, or CdsAuthError
    (its `jti` is still to be claimed: `claim_once`)."""
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise CdsAuthError(f"not a readable JWT ({exc})") from None
    issuer = unverified.get("iss")
    client = clients.get(issuer) if isinstance(issuer, str) else None
    if client is None:
        raise CdsAuthError(f"iss {issuer!r} is not a CDS client this service trusts (ALEMWATCH_CDS_CLIENTS)")
    try:
        key = _key_set(client.jwks_url, timeout).get_signing_key_from_jwt(token).key
    except jwt.PyJWKClientError as exc:
        raise CdsAuthError(f"the CDS client's signing key could not be had from its JWK Set ({exc})") from None
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=ALGORITHMS,
            audience=audience,
            issuer=issuer,
            leeway=CLOCK_LEEWAY_SECONDS,
            options={"require": ["iss", "aud", "exp", "iat", "jti"]},
        )
    except jwt.InvalidAudienceError:
        raise CdsAuthError(f"aud must be this CDS Service's endpoint, {audience}") from None
    except jwt.PyJWTError as exc:
        raise CdsAuthError(f"the JWT does not verify: {exc}") from None
    expires = float(claims["exp"])
    if expires - time.time() > MAX_LIFETIME_SECONDS + CLOCK_LEEWAY_SECONDS:
        raise CdsAuthError("exp is more than five minutes ahead")
    when = dt.datetime.fromtimestamp(expires, dt.UTC)
    return Verified(client.account, str(issuer), str(claims["jti"]), when)


def claim_once(session: Session, verified: Verified) -> None:
    """Record the JWT's `jti` as used, or CdsAuthError if it was (by any worker). Ids of
    tokens expired past the leeway are dropped first: such a token is refused by its `exp`."""
    now = dt.datetime.now(dt.UTC)
    session.execute(delete(m.CdsJwtId).where(m.CdsJwtId.expires_at < now - dt.timedelta(seconds=CLOCK_LEEWAY_SECONDS)))
    row = {"issuer": verified.issuer, "jti": verified.jti, "expires_at": verified.expires}
    statement = dialect_insert(session, m.CdsJwtId).on_conflict_do_nothing().returning(m.CdsJwtId.jti)
    if session.execute(statement, row).first() is None:  # nothing inserted: the id was there
        raise CdsAuthError("jti was used before: a JWT is good for one call")


def _key_set(url: str, timeout: float) -> PyJWKClient:
    with _lock:
        found = _key_sets.get(url)
        if found is None:
            found = PyJWKClient(url, cache_keys=True, lifespan=JWKS_CACHE_SECONDS, timeout=int(max(1, timeout)))
            _key_sets[url] = found
        return found
