"""Verification of Firebase ID tokens (RS256, signed by Google's secure-token service).

A dashboard user signs in with Firebase and sends the ID token as a bearer credential.
The token is trusted only if its signature checks against a key of the configured JWKS,
its audience is our Firebase project, its issuer is that project's secure-token issuer,
and it is neither expired nor issued in the future; its subject is the Firebase uid.

The key id in a token's header is chosen by whoever sent it, before anything is
verified. So the JWKS is read again for an unknown key id at most once per
``VI_FIREBASE_JWKS_MIN_REFETCH_SECONDS``, by one request at a time (the others answer
from the keys held meanwhile, without waiting); in between, an unknown key id is refused
without asking Google. Random key ids cannot make us hammer Google's key server.
"""

from __future__ import annotations

import logging
import threading
import time

import jwt

from vidinsight.errors import Reason, TransientError
from vidinsight.settings import Settings

log = logging.getLogger(__name__)

ISSUER_PREFIX = "https://securetoken.google.com/"
# How long fetched signing keys are trusted before the JWKS is read again (Google rotates
# them daily and publishes a new key well before it signs with it).
JWKS_CACHE_SECONDS = 300
JWKS_TIMEOUT_SECONDS = 5


class InvalidToken(Exception):
    """The token is not a valid Firebase ID token for this project (the reason is the text)."""


class KeySet:
    """Google's signing keys by key id, fetched at most once per ``min_refetch_seconds``."""

    def __init__(self, url: str, min_refetch_seconds: float) -> None:
        self._client = jwt.PyJWKClient(url, cache_jwk_set=False, timeout=JWKS_TIMEOUT_SECONDS)
        self._min_refetch = min_refetch_seconds
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch (monotonic)
        self._tried_at: float | None = None  # last attempt, successful or not
        self._lock = threading.Lock()

    def key(self, kid: str) -> jwt.PyJWK:
        """The key ``kid``; ``InvalidToken`` if the key set lacks it, ``TransientError``
        if the key server cannot be reached and no key set is held."""
        key = self._keys.get(kid)
        if key is not None and not self._stale():
            return key
        if not self._lock.acquire(blocking=self._fetched_at is None):
            # Another request is fetching: answer from the keys held rather than tie up
            # a thread for the fetch's length (Google publishes a key before it signs
            # with it, so a genuine token's key is already held). Only while no key set
            # was ever held is there nothing to answer from, and then callers wait.
            return self._held(kid)
        try:
            if (kid not in self._keys or self._stale()) and self._may_fetch():
                self._fetch()
        finally:
            self._lock.release()
        return self._held(kid)

    def _held(self, kid: str) -> jwt.PyJWK:
        key = self._keys.get(kid)
        if key is None and self._fetched_at is None:
            raise TransientError(
                Reason.PROVIDER_UNAVAILABLE, "cannot fetch the Firebase signing keys"
            )
        if key is None:
            raise InvalidToken(f"signing key {kid!r} not found")
        return key

    def _stale(self) -> bool:
        return self._fetched_at is None or time.monotonic() - self._fetched_at > JWKS_CACHE_SECONDS

    def _may_fetch(self) -> bool:
        return self._tried_at is None or time.monotonic() - self._tried_at >= self._min_refetch

    def _fetch(self) -> None:
        """Replace the keys with the key server's (called with the lock held)."""
        self._tried_at = time.monotonic()
        try:
            keys = self._client.get_signing_keys()
        except Exception as exc:  # unreachable, an error page, not a key set: none fetched
            log.warning(
                "Firebase signing keys not fetched",
                extra={"detail": f"{type(exc).__name__}: {exc}"},
            )
            return
        self._keys = {key.key_id: key for key in keys if key.key_id}
        self._fetched_at = self._tried_at


class FirebaseVerifier:
    """Checks ID tokens against one project's JWKS; safe to share between threads."""

    def __init__(self, settings: Settings) -> None:
        self._project = settings.firebase_project_id
        self._leeway = settings.firebase_clock_skew_seconds
        self._keys = KeySet(settings.firebase_jwks_url, settings.firebase_jwks_min_refetch_seconds)

    def uid(self, token: str) -> str:
        """The Firebase uid of a valid token; ``InvalidToken`` otherwise."""
        if not self._project:
            raise InvalidToken("Firebase sign-in is not configured")
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            if not isinstance(kid, str) or not kid:
                raise InvalidToken("token has no key id")
            claims = jwt.decode(
                token,
                self._keys.key(kid).key,
                algorithms=["RS256"],
                audience=self._project,
                issuer=ISSUER_PREFIX + self._project,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "aud", "iss", "sub"]},
            )
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(str(exc)) from exc
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("token has no subject")
        return subject
