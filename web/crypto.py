"""Secrets at rest: AES-GCM under keys derived from SECRET_KEY, one key per purpose."""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONCE_BYTES = 12


class SealError(ValueError):
    """A sealed value was altered, or sealed under a key that is no longer configured."""


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A 256-bit key for one purpose: a key leaked from one use says nothing of the others."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(secret)


class SecretBox:
    """Seal with the first secret key, open with any of them (so SECRET_KEY can be rotated).

    The purpose is also the associated data: a value sealed for one purpose cannot be
    passed off as another's.
    """

    def __init__(self, secret_keys: tuple[bytes, ...], purpose: str) -> None:
        if not secret_keys:
            raise ValueError("at least one secret key is needed")
        self.purpose = purpose.encode()
        self._ciphers = [AESGCM(derive_key(k, purpose)) for k in secret_keys]

    def seal(self, plaintext: bytes) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = nonce + self._ciphers[0].encrypt(nonce, plaintext, self.purpose)
        return base64.urlsafe_b64encode(sealed).decode()

    def open(self, sealed: str) -> bytes:
        try:
            raw = base64.urlsafe_b64decode(sealed.encode())
        except (ValueError, UnicodeEncodeError):
            raise SealError("not a sealed value") from None
        nonce, body = raw[:NONCE_BYTES], raw[NONCE_BYTES:]
        for cipher in self._ciphers:
            try:
                return cipher.decrypt(nonce, body, self.purpose)
            except (InvalidTag, ValueError):
                continue
        raise SealError("cannot open: altered, or sealed under a retired key")

    def needs_reseal(self, sealed: str) -> bool:
        """Whether a value was sealed under a key other than the current one."""
        raw = base64.urlsafe_b64decode(sealed.encode())
        try:
            self._ciphers[0].decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], self.purpose)
        except (InvalidTag, ValueError):
            return True
        return False
