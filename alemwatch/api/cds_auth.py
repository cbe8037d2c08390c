"""CDS Hooks 2.0 client authentication: the JWT the CDS client (the EHR) signs for each call.

The specification (Security, "Trusting CDS Clients"): every call carries
`Authorization: Bearer <JWT>` signed by the client (ES384 or RS384) with claims `iss`,
`aud` (the CDS Service endpoint), `exp` (at most five minutes ahead), `iat` and `jti` (never
used twice). alemwatch trusts the issuers listed in `ALEMWATCH_CDS_CLIENTS`, each with the URL
of its JSON Web Key Set and the alemwatch care-team account its calls are made as (so that
access rules and the audit trail name someone). The keys are fetched from that URL (and
kept; a new `kid` fetches again), never from a URL the token names (`jku`).

Seen `jti`s are kept in memory until their token expires: each worker process refuses a replay
to itself; a replay to another worker within those minutes is not caught (no shared store)."""

from __future__ import annotations

import threading
import time

import jwt
from jwt import PyJWKClient

from alemwatch.settings import CdsClient

ALGORITHMS = ["ES384", "RS384"]  # the specification's
MAX_LIFETIME_SECONDS = 300  # exp no more than five minutes ahead (specification)
CLOCK_LEEWAY_SECONDS = 30  # POLICY: clock difference tolerated between the EHR and alemwatch
JWKS_CACHE_SECONDS = 300  # POLICY: how long fetched keys are kept before asking again

_key_sets: dict[str, PyJWKClient] = {}
_seen: dict[tuple[str, str], float] = {}
_lock = threading.Lock()


class CdsAuthError(ValueError):
    """Why a CDS client's JWT is refused (said in the 401)."""


def looks_like_jwt(token: str) -> bool:
    """A JWS compact serialisation (header.payload.signature), not one of alemwatch's own tokens."""
    return token.count(".") == 2 and token.startswith("eyJ")


def verify(token: str, clients: dict[str, CdsClient], audience: str, timeout: float) -> str:
    """The alemwatch account the CDS client's calls are made as, or CdsAuthError."""
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
    now = time.time()
    expires = float(claims["exp"])
    if expires - now > MAX_LIFETIME_SECONDS + CLOCK_LEEWAY_SECONDS:
        raise CdsAuthError("exp is more than five minutes ahead")
    with _lock:
        for seen, until in list(_seen.items()):
            if until + CLOCK_LEEWAY_SECONDS < now:
                del _seen[seen]
        marker = (str(issuer), str(claims["jti"]))
        if marker in _seen:
            raise CdsAuthError("jti was used before: a JWT is good for one call")
        _seen[marker] = expires
    return client.account


def _key_set(url: str, timeout: float) -> PyJWKClient:
    with _lock:
        found = _key_sets.get(url)
        if found is None:
            found = PyJWKClient(url, cache_keys=True, lifespan=JWKS_CACHE_SECONDS, timeout=int(max(1, timeout)))
            _key_sets[url] = found
        return found
