"""A software WebAuthn authenticator plus the browser around it, for tests.

It answers creation and request options the way a browser with a platform passkey provider
would (ES256 keys, resident credentials, the JSON of PublicKeyCredential.toJSON()), and has
knobs to misbehave like a phishing page, a cloned key or a lazy authenticator.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import cbor2
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

ES256 = -7
UP, UV, BE, BS, AT = 0x01, 0x04, 0x08, 0x10, 0x40
DEFAULT_AAGUID = bytes.fromhex("5e0f7e5d1a2b4c3d8e9f00112233aabb")

Options = str | Mapping[str, Any]


def b64url(data: bytes) -> str:
    """Base64url without padding, as WebAuthn's JSON forms use."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    """The inverse of b64url."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class AuthenticatorError(Exception):
    """What the browser would reject with a DOMException (the name is the message)."""


@dataclass
class ResidentCredential:
    """What a passkey provider keeps per credential."""

    credential_id: bytes
    private_key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    sign_count: int = 0
    backup_eligible: bool = False
    backed_up: bool = False


class SoftAuthenticator:
    """A passkey provider in a browser tab at `origin`.

    `rp_id` None means "whatever the options ask for" (an honest authenticator); a value
    makes every credential and signature claim that rp id instead.
    """

    def __init__(
        self,
        origin: str,
        rp_id: str | None = None,
        *,
        backup_eligible: bool = False,
        backed_up: bool = False,
        counter_step: int = 1,
        aaguid: bytes = DEFAULT_AAGUID,
    ) -> None:
        self.origin = origin
        self.rp_id = rp_id
        self.backup_eligible = backup_eligible
        self.backed_up = backed_up
        self.counter_step = counter_step  # 0 = an authenticator without a counter (synced passkeys)
        self.aaguid = aaguid
        self.credentials: list[ResidentCredential] = []

    def create(
        self,
        options: Options,
        *,
        attestation: Literal["none", "packed"] = "none",
        user_verified: bool = True,
        user_present: bool = True,
        origin: str | None = None,
        challenge: bytes | None = None,
        credential_id: bytes | None = None,
    ) -> dict[str, Any]:
        """Make and store a resident credential; return the JSON a browser would post.

        `credential_id`: the id to claim (with "none" attestation nothing vouches for it)."""
        opts = _public_key(options)
        if not any(p.get("alg") == ES256 for p in opts["pubKeyCredParams"]):
            raise AuthenticatorError("NotSupportedError")
        rp_id = self.rp_id or opts["rp"].get("id") or _host(self.origin)
        excluded = {unb64url(c["id"]) for c in opts.get("excludeCredentials", [])}
        if any(c.credential_id in excluded and c.rp_id == rp_id for c in self.credentials):
            raise AuthenticatorError("InvalidStateError")

        credential = ResidentCredential(
            credential_id=credential_id or os.urandom(32),
            private_key=ec.generate_private_key(ec.SECP256R1()),
            rp_id=rp_id,
            user_handle=unb64url(opts["user"]["id"]),
            sign_count=self.counter_step,  # some authenticators start at 0, some count creation
            backup_eligible=self.backup_eligible,
            backed_up=self.backed_up,
        )
        # A resident key replaces any other for the same account on this rp (as platforms do).
        self.credentials = [
            c for c in self.credentials if (c.rp_id, c.user_handle) != (rp_id, credential.user_handle)
        ]
        self.credentials.append(credential)

        client_data = self._client_data("webauthn.create", opts, origin, challenge)
        flags = AT | _flags(user_present, user_verified, credential.backup_eligible, credential.backed_up)
        cose_key = _cose_key(credential.private_key.public_key())
        attested = self.aaguid + struct.pack(">H", len(credential.credential_id)) + credential.credential_id
        auth_data = _auth_data(rp_id, flags, credential.sign_count) + attested + cose_key
        statement: dict[str, Any] = {}
        if attestation == "packed":  # self attestation: signed by the new key itself, no x5c
            signature = _sign(credential.private_key, auth_data + hashlib.sha256(client_data).digest())
            statement = {"alg": ES256, "sig": signature}
        attestation_object = cbor2.dumps({"fmt": attestation, "attStmt": statement, "authData": auth_data})

        extensions: dict[str, Any] = {}
        if opts.get("extensions", {}).get("credProps"):
            extensions["credProps"] = {"rk": True}
        public_key_der = credential.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {
            "id": b64url(credential.credential_id),
            "rawId": b64url(credential.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation_object),
                "authenticatorData": b64url(auth_data),
                "transports": ["hybrid", "internal"],
                "publicKey": b64url(public_key_der),
                "publicKeyAlgorithm": ES256,
            },
            "clientExtensionResults": extensions,
            "authenticatorAttachment": "platform",
        }

    def get(
        self,
        options: Options,
        *,
        credential_id: bytes | None = None,
        user_verified: bool = True,
        user_present: bool = True,
        origin: str | None = None,
        challenge: bytes | None = None,
        sign_count_override: int | None = None,
        backup_eligible: bool | None = None,
        backed_up: bool | None = None,
        cross_origin: bool = False,
        claim_rp_id: str | None = None,
    ) -> dict[str, Any]:
        """Sign in with a stored credential (the newest for the rp, unless chosen); return the JSON.

        The keyword arguments after `credential_id` are the attacks: a phishing origin, an old
        challenge, a cloned key's counter, changed flags, a framing site, another rp id claimed.
        """
        opts = _public_key(options)
        rp_id = self.rp_id or opts.get("rpId") or _host(self.origin)
        candidates = [c for c in self.credentials if c.rp_id == rp_id]
        allowed = {unb64url(c["id"]) for c in opts.get("allowCredentials", [])}
        if allowed:
            candidates = [c for c in candidates if c.credential_id in allowed]
        if credential_id is not None:
            candidates = [c for c in candidates if c.credential_id == credential_id]
        if not candidates:
            raise AuthenticatorError("NotAllowedError")
        credential = candidates[-1]

        credential.sign_count += self.counter_step
        count = credential.sign_count if sign_count_override is None else sign_count_override
        flags = _flags(
            user_present,
            user_verified,
            credential.backup_eligible if backup_eligible is None else backup_eligible,
            credential.backed_up if backed_up is None else backed_up,
        )
        auth_data = _auth_data(claim_rp_id or rp_id, flags, count)
        client_data = self._client_data("webauthn.get", opts, origin, challenge, cross_origin)
        signature = _sign(credential.private_key, auth_data + hashlib.sha256(client_data).digest())
        return {
            "id": b64url(credential.credential_id),
            "rawId": b64url(credential.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": b64url(credential.user_handle),
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }

    def _client_data(
        self,
        ceremony: str,
        opts: Mapping[str, Any],
        origin: str | None,
        challenge: bytes | None,
        cross_origin: bool = False,
    ) -> bytes:
        # Same members, order and compact form as Chromium's clientDataJSON.
        data = {
            "type": ceremony,
            "challenge": opts["challenge"] if challenge is None else b64url(challenge),
            "origin": origin or self.origin,
            "crossOrigin": cross_origin,
        }
        return json.dumps(data, separators=(",", ":")).encode()


def _public_key(options: Options) -> Mapping[str, Any]:
    opts = json.loads(options) if isinstance(options, str) else options
    # Accept both the bare options and navigator.credentials' {"publicKey": ...} wrapper.
    inner = opts.get("publicKey", opts)
    assert isinstance(inner, Mapping)
    return inner


def _host(origin: str) -> str:
    return urlsplit(origin).hostname or ""


def _flags(user_present: bool, user_verified: bool, backup_eligible: bool, backed_up: bool) -> int:
    return (
        (UP if user_present else 0)
        | (UV if user_verified else 0)
        | (BE if backup_eligible else 0)
        | (BS if backed_up else 0)
    )


def _auth_data(rp_id: str, flags: int, sign_count: int) -> bytes:
    return hashlib.sha256(rp_id.encode()).digest() + bytes([flags]) + struct.pack(">I", sign_count)


def _cose_key(public_key: ec.EllipticCurvePublicKey) -> bytes:
    numbers = public_key.public_numbers()
    return cbor2.dumps(
        {
            1: 2,  # kty: EC2
            3: ES256,  # alg
            -1: 1,  # crv: P-256
            -2: numbers.x.to_bytes(32, "big"),
            -3: numbers.y.to_bytes(32, "big"),
        }
    )


def _sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    return key.sign(data, ec.ECDSA(hashes.SHA256()))
