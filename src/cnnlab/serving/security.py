"""Who may use the model: the API key, and requests that other web sites' pages make.

The key arrives as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` and is compared in constant
time (``hmac.compare_digest`` of SHA-256 digests, so not even its length leaks through timing). A
missing or wrong key is a 401 saying how to send one; the key is never echoed, logged or printed.

CORS alone cannot stop another site's page from *sending* a form to this server (a multipart POST
needs no preflight; CORS only hides the answer), so a browser request that says it comes from
another site (``Sec-Fetch-Site: cross-site`` or ``same-site``, sent by current browsers) is refused
with 403 unless its ``Origin`` was allowed with ``--cors-origin``. Clients that are not browsers
send no such header and are not affected; the page itself is same-origin.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import HTTPException, Request

HOW_TO_SEND = (
    "send it as the header 'Authorization: Bearer KEY' or 'X-API-Key: KEY' (curl -H 'Authorization: Bearer KEY' ...)"
)
OTHER_SITES = ("cross-site", "same-site")


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


class Guard:
    """Checks each request to the model: its origin, then its key."""

    def __init__(self, api_key: str | None, cors_origins: tuple[str, ...]) -> None:
        self._key = _digest(api_key) if api_key is not None else None
        self.allowed_origins = frozenset(cors_origins)
        self.unauthorized = 0
        self.cross_site_refused = 0

    @property
    def key_required(self) -> bool:
        return self._key is not None

    def check(self, request: Request) -> None:
        """Raises HTTPException 403 (another site, not allowed) or 401 (no key, or not this server's)."""
        headers = request.headers
        origin = headers.get("origin")
        if headers.get("sec-fetch-site") in OTHER_SITES and origin not in self.allowed_origins:
            self.cross_site_refused += 1
            raise HTTPException(
                403,
                f"requests from pages of another site ({origin or 'no Origin'}) are refused; "
                "start the server with --cors-origin ORIGIN to allow that site's pages",
            )
        if self._key is None:
            return
        sent = _sent_key(headers.get("authorization"), headers.get("x-api-key"))
        if sent is None:
            self.unauthorized += 1
            raise HTTPException(
                401, f"this server needs an API key: {HOW_TO_SEND}", headers={"WWW-Authenticate": "Bearer"}
            )
        if not hmac.compare_digest(_digest(sent), self._key):
            self.unauthorized += 1
            raise HTTPException(
                401,
                f"the API key sent is not this server's; ask its owner for the key and {HOW_TO_SEND}",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )


def _sent_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request carries: the bearer token, else X-API-Key; None when neither is there."""
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None
