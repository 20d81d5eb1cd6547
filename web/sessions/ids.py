"""Session ids, the signed cookie that carries them, and the hashes that stand for them.

An id is 43 base64url characters. Its first four are a *tag*: random for an anonymous
visitor, and derived from the user id for a signed-in one. Every Redis key of a user (the
sessions, their index, the credential epoch) carries that tag in braces, so Redis Cluster
keeps them in one slot and one Lua script can change them together, atomically.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

_ID = re.compile(r"[A-Za-z0-9_-]{43}")  # 256 bits' worth of base64url, without padding
TAG_LENGTH = 4


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def user_tag(user_id: str) -> str:
    """The four characters that put every key of one user in the same Redis Cluster slot."""
    return _b64(hashlib.sha256(f"user:{user_id}".encode()).digest())[:TAG_LENGTH]


def new_id(tag: str | None = None) -> str:
    """A fresh session id: random, but for its tag; 234 random bits even with one."""
    raw = secrets.token_urlsafe(32)
    return f"{tag}{raw[TAG_LENGTH:]}" if tag else raw


def digest(session_id: str) -> str:
    """What Redis is keyed by: the tag, then 128 bits of the id's SHA-256, useless as a cookie.

    A stolen dump would need a preimage of SHA-256 to become a cookie; 2^128 is ample.
    """
    return f"{{{session_id[:TAG_LENGTH]}}}{_b64(hashlib.sha256(session_id.encode()).digest()[:16])}"


def tag_of(session_digest: str) -> str:
    return session_digest[1 : 1 + TAG_LENGTH]


class Signer:
    """HMAC-sign ids with the first key; accept any of the keys, so keys can be rotated."""

    def __init__(self, keys: tuple[bytes, ...]) -> None:
        if not keys:
            raise ValueError("at least one secret key is needed")
        self.keys = keys
        # Each key's HMAC with its key already absorbed, copied for each use: every signed-in
        # request checks a cookie, and a fresh HMAC pays for the key schedule each time.
        self._keyed = {key: hmac.new(key, digestmod=hashlib.sha256) for key in keys}

    def mac(self, purpose: str, value: str, key: bytes | None = None) -> str:
        """A keyed hash of a value for one purpose (cookies, handles, device ids...)."""
        keyed = self._keyed[key or self.keys[0]]  # only our own keys sign anything
        h = keyed.copy()
        h.update(f"{purpose}:{value}".encode())
        return _b64(h.digest())

    def sign(self, value: str, purpose: str = "session") -> str:
        return f"{value}.{self.mac(purpose, value)}"

    def unsign(self, signed: str, purpose: str = "session") -> tuple[str, bool] | None:
        """Return (value, signed with the current key) for a genuine session cookie, else None."""
        value, _, mac = signed.partition(".")
        # A genuine MAC is base64url; compare_digest raises on a str that is not ASCII.
        if not _ID.fullmatch(value) or not mac.isascii():
            return None
        for i, key in enumerate(self.keys):
            if hmac.compare_digest(mac, self.mac(purpose, value, key)):
                return value, i == 0
        return None

    def handle(self, session_digest: str) -> str:
        """A public name for a session, for URLs and logs: keyed, so it leads back to nothing."""
        return self.mac("handle", session_digest)[:22]
