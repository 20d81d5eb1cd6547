"""TOTP second factor: secrets, the enrolment QR code, replay-proof verification, recovery codes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from html import escape

import pyotp
import segno

# The SecretBox purpose under which TOTP secrets are sealed at rest: one name, used everywhere.
SEAL_PURPOSE = "totp-secret"

DIGITS = 6
# ±1 step forgives a phone clock 30 s off and a code typed just as it rolled over; more only
# widens the window for a guessed or shoulder-surfed code.
WINDOW = 1

RECOVERY_CODE_COUNT = 10
# Crockford's base32: no i, l, o or u, so a code copied by hand cannot be misread; 32 symbols
# make each character 5 bits, so 16 characters are 80 bits.
RECOVERY_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
RECOVERY_GROUPS = 4
RECOVERY_GROUP_LENGTH = 4
_RECOVERY_LENGTH = RECOVERY_GROUPS * RECOVERY_GROUP_LENGTH
# What a reader may type for the symbols left out (Crockford's decoding rules).
_LOOKALIKES = str.maketrans({"o": "0", "i": "1", "l": "1"})


def new_secret() -> str:
    """A fresh base32 TOTP secret of 160 bits (RFC 4226's recommended length)."""
    return pyotp.random_base32(length=32)  # 32 base32 characters = 160 bits, from SystemRandom


def otpauth_uri(secret: str, account_name: str, issuer: str = "Sessions") -> str:
    """The otpauth:// URI an authenticator app reads from the QR code."""
    return pyotp.TOTP(secret, digits=DIGITS).provisioning_uri(name=account_name, issuer_name=issuer)


def qr_svg(uri: str, label: str = "QR code to scan with your authenticator app") -> str:
    """Inline <svg> markup for `uri`, safe for `|safe`: no styles, an accessible name, CSS-sized."""
    code = segno.make(uri, error="m")
    svg = code.svg_inline(
        omitsize=True,  # a viewBox and no width/height: the stylesheet decides the size
        light="#fff",  # an opaque quiet zone, so a dark page theme cannot swallow the code
        dark="#000",
        svgclass="qr-code",
        lineclass=None,
        title=label,  # segno escapes it
    )
    # segno has no option for these; its markup always starts with "<svg ".
    label_attr = escape(label, quote=True)
    return svg.replace("<svg ", f'<svg role="img" aria-label="{label_attr}" shape-rendering="crispEdges" ', 1)


def verify(secret: str, code: str, *, last_step: int | None, now: float) -> int | None:
    """The time step `code` is valid for (now ±1, later than `last_step`), or None.

    The caller stores the returned step as the new `last_step`, so each code works once.
    """
    code = "".join(code.split())
    # str.isdigit() also accepts "²" and Arabic-Indic digits; only ASCII digits are a code.
    if len(code) != DIGITS or not (code.isascii() and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS)
    current = totp.timecode(now)
    for step in range(current - WINDOW, current + WINDOW + 1):
        if last_step is not None and step <= last_step:
            continue  # used already, or older than a code already used: a replay
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def new_recovery_codes(n: int = RECOVERY_CODE_COUNT) -> list[str]:
    """`n` fresh recovery codes like `7k2m-q9xd-4hwp-0ba3` (80 bits each), to show once."""
    codes = []
    for _ in range(n):
        chars = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))
        step = RECOVERY_GROUP_LENGTH
        codes.append("-".join(chars[i : i + step] for i in range(0, _RECOVERY_LENGTH, step)))
    return codes


def normalize_recovery_code(code: str) -> str:
    """The canonical form of a typed code: lower case, no dashes or spaces, look-alikes mapped."""
    return "".join(code.lower().replace("-", "").split()).translate(_LOOKALIKES)


def hash_recovery_code(code: str) -> str:
    """The hex SHA-256 of the normalised code, which is all that is stored.

    A fast hash is enough here: slow, salted hashes protect guessable passwords, but a random
    80-bit code cannot be found by brute force (2^80 SHA-256 runs) or precomputed tables.
    """
    return hashlib.sha256(b"recovery-code:" + normalize_recovery_code(code).encode()).hexdigest()


def match_recovery_code(code: str, hashes: list[str]) -> str | None:
    """The stored hash `code` matches, so the caller can remove exactly that one; else None."""
    normalized = normalize_recovery_code(code)
    if len(normalized) != _RECOVERY_LENGTH or not set(normalized) <= set(RECOVERY_ALPHABET):
        return None
    candidate = hash_recovery_code(normalized)
    found = None
    # Compare with every hash, in constant time, so timing says nothing about which one matched.
    for stored in hashes:
        if hmac.compare_digest(candidate, stored):
            found = stored
    return found
