"""Verification of Firebase ID tokens (RS256, signed by Google's secure-token service).

A dashboard user signs in with Firebase and sends the ID token as a bearer credential.
The token is trusted only if its signature checks against a key of the configured JWKS,
its audience is our Firebase project, its issuer is that project's secure-token issuer,
and it is neither expired nor issued in the future; its subject is the Firebase uid.
"""

from __future__ import annotations

import jwt

from vidinsight.errors import Reason, TransientError
from vidinsight.settings import Settings

ISSUER_PREFIX = "https://securetoken.google.com/"
# How long fetched signing keys are trusted before the JWKS is read again.
JWKS_CACHE_SECONDS = 300


class InvalidToken(Exception):
    """The token is not a valid Firebase ID token for this project (the reason is the text)."""


class FirebaseVerifier:
    """Checks ID tokens against one project's JWKS; safe to share between threads."""

    def __init__(self, settings: Settings) -> None:
        self._project = settings.firebase_project_id
        self._leeway = settings.firebase_clock_skew_seconds
        self._jwks = jwt.PyJWKClient(
            settings.firebase_jwks_url, cache_keys=True, lifespan=JWKS_CACHE_SECONDS, timeout=5
        )

    def uid(self, token: str) -> str:
        """The Firebase uid of a valid token; ``InvalidToken`` otherwise."""
        if not self._project:
            raise InvalidToken("Firebase sign-in is not configured")
        try:
            key = self._jwks.get_signing_key_from_jwt(token).key
            claims = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=self._project,
                issuer=ISSUER_PREFIX + self._project,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "aud", "iss", "sub"]},
            )
        except jwt.PyJWKClientConnectionError as exc:
            # Google's key server is down: say so (503), not "your token is bad" (401).
            raise TransientError(
                Reason.PROVIDER_UNAVAILABLE, "cannot fetch the Firebase signing keys"
            ) from exc
        except jwt.PyJWKClientError as exc:
            raise InvalidToken(f"signing key not found: {exc}") from exc
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(str(exc)) from exc
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("token has no subject")
        return subject
