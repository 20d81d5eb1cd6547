"""Session ids, the signed cookie that carries them, and the hashes that stand for them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

_ID = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 random bytes, base64url without padding


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def new_id() -> str:
    """A fresh session id: 256 random bits."""
    return secrets.token_urlsafe(32)


def digest(session_id: str) -> str:
    """The SHA-256 of an id: what Redis is keyed by, useless as a cookie."""
    return _b64(hashlib.sha256(session_id.encode()).digest())


class Signer:
    """HMAC-sign ids with the first key; accept any of the keys, so keys can be rotated."""

    def __init__(self, keys: tuple[bytes, ...]) -> None:
        if not keys:
            raise ValueError("at least one secret key is needed")
        self.keys = keys

    def _mac(self, key: bytes, purpose: str, value: str) -> str:
        return _b64(hmac.new(key, f"{purpose}:{value}".encode(), hashlib.sha256).digest())

    def sign(self, session_id: str) -> str:
        return f"{session_id}.{self._mac(self.keys[0], 'session', session_id)}"

    def unsign(self, cookie: str) -> tuple[str, bool] | None:
        """Return (id, signed with the current key) for a genuine cookie, else None."""
        session_id, _, mac = cookie.partition(".")
        # A genuine MAC is base64url; compare_digest raises on a str that is not ASCII.
        if not _ID.fullmatch(session_id) or not mac.isascii():
            return None
        for i, key in enumerate(self.keys):
            if hmac.compare_digest(mac, self._mac(key, "session", session_id)):
                return session_id, i == 0
        return None

    def handle(self, session_digest: str) -> str:
        """A public name for a session, for URLs and logs: keyed, so it leads back to nothing."""
        return self._mac(self.keys[0], "handle", session_digest)[:22]
