"""Passkeys: typed wrappers over py_webauthn for one relying party, with one error type.

Every ceremony needs user verification, so a passkey is a whole sign-in on its own. The
challenge is generated here but kept by the caller (single use, bound to the session, with a
TTL); `verify_*` only compares against the challenge it is given.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    options_to_json_dict,
    parse_attestation_object,
    parse_authentication_credential_json,
    parse_authenticator_data,
    parse_client_data_json,
    parse_registration_credential_json,
)
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorData,
    AuthenticatorSelectionCriteria,
    ClientDataType,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

# The browser prompt may stay open as long as the caller keeps the challenge (5 minutes).
TIMEOUT_MS = 300_000
# We ask for no attestation and trust no vendor roots; "packed" still comes back from some
# authenticators (self attestation), and the other formats only matter with a trust store.
ACCEPTED_FORMATS = frozenset({"none", "packed"})
MAX_USER_HANDLE = 64  # bytes, per the WebAuthn spec
MAX_CREDENTIAL_ID = 1023  # bytes, per the WebAuthn spec
MAX_CREDENTIAL_JSON = 64 * 1024

Reason = Literal[
    "malformed",
    "challenge",
    "origin",
    "rp_id",
    "user_presence",
    "user_verification",
    "attestation",
    "signature",
    "counter",
    "backup_state",
    "user_handle",
    "duplicate",
]


class PasskeyError(Exception):
    """A passkey response was refused; the message is short and safe to show, `reason` is for logs."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason
        self.user_id: str | None = None  # the account it was for, once known (a clone alarm)


@dataclass(frozen=True, slots=True)
class NewPasskey:
    """A verified registration: what to store with the account."""

    credential_id: bytes
    public_key: bytes  # COSE_Key, as py_webauthn wants it back
    sign_count: int
    backed_up: bool
    backup_eligible: bool  # fixed for the credential's life; checked again at every sign-in
    transports: tuple[str, ...]
    aaguid: str
    discoverable: bool | None  # the browser's credProps report; None when it did not say


@dataclass(frozen=True, slots=True)
class UsedPasskey:
    """A verified sign-in: the values to write back to the stored passkey."""

    credential_id: bytes
    sign_count: int
    backed_up: bool


@dataclass(frozen=True, slots=True)
class Assertion:
    """Who an assertion claims to be, read before anything is verified: only for the lookup."""

    credential_id: bytes
    user_handle: bytes | None


@dataclass(frozen=True, slots=True)
class RelyingParty:
    """This site as WebAuthn sees it: the rp id (a domain) and the one origin allowed to use it."""

    rp_id: str
    origin: str
    name: str

    @classmethod
    def from_public_url(cls, public_url: str, *, name: str = "Sessions") -> RelyingParty:
        """The relying party a browser sees at `public_url`; ValueError if browsers refuse it."""
        parts = urlsplit(public_url)
        host = parts.hostname or ""  # lower-cased by urlsplit, as browsers do
        if parts.scheme not in ("https", "http") or not host:
            raise ValueError("passkeys need an https:// URL")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            raise ValueError(
                "browsers refuse an IP address as a passkey relying party; use a domain name "
                "(in development http://localhost:PORT)"
            )
        local = host == "localhost" or host.endswith(".localhost")
        if parts.scheme == "http" and not local:
            raise ValueError("passkeys need https:// (plain http:// only on localhost)")
        if not host.isascii() or host.endswith("."):
            raise ValueError("write the host in its ASCII (punycode) form, without a trailing dot")
        port = parts.port  # raises ValueError for a malformed port
        default_port = 443 if parts.scheme == "https" else 80
        # An origin is scheme://host[:port] with the default port left out; the path plays no part.
        origin = f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default_port) else "")
        return cls(rp_id=host, origin=origin, name=name)

    def registration_options(
        self, user_handle: bytes, user_name: str, display_name: str, exclude: list[bytes]
    ) -> tuple[str, bytes]:
        """Creation options JSON for a discoverable, user-verified passkey, and its challenge."""
        # py_webauthn quietly substitutes random bytes for an empty user id.
        if not 1 <= len(user_handle) <= MAX_USER_HANDLE:
            raise ValueError(f"a user handle is 1 to {MAX_USER_HANDLE} bytes")
        options = generate_registration_options(
            rp_id=self.rp_id,
            rp_name=self.name,
            user_id=user_handle,
            user_name=user_name,
            user_display_name=display_name,
            timeout=TIMEOUT_MS,
            attestation=AttestationConveyancePreference.NONE,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.REQUIRED,
                user_verification=UserVerificationRequirement.REQUIRED,
            ),
            exclude_credentials=[PublicKeyCredentialDescriptor(id=c) for c in exclude],
        )
        as_dict = options_to_json_dict(options)
        # py_webauthn has no extensions parameter; credProps tells us whether the key is resident.
        as_dict["extensions"] = {"credProps": True}
        return json.dumps(as_dict), options.challenge

    def authentication_options(self, allow: list[bytes] | None = None) -> tuple[str, bytes]:
        """Request options JSON (user verification required) and its challenge; no `allow` = discoverable."""
        options = generate_authentication_options(
            rp_id=self.rp_id,
            timeout=TIMEOUT_MS,
            allow_credentials=[PublicKeyCredentialDescriptor(id=c) for c in allow or []],
            user_verification=UserVerificationRequirement.REQUIRED,
        )
        return json.dumps(options_to_json_dict(options)), options.challenge

    def verify_registration(self, credential_json: str | Mapping[str, Any], challenge: bytes) -> NewPasskey:
        """Check a navigator.credentials.create() response against `challenge`; PasskeyError if refused."""
        data = _load(credential_json)
        try:
            credential = parse_registration_credential_json(data)
            attestation = parse_attestation_object(credential.response.attestation_object)
        except Exception as exc:  # any failure to parse attacker-supplied bytes is the same refusal
            raise PasskeyError("malformed", "The passkey response was malformed.") from exc
        self._check_client_data(
            credential.response.client_data_json, ClientDataType.WEBAUTHN_CREATE, challenge
        )
        self._check_authenticator_data(attestation.auth_data)
        if attestation.fmt not in ACCEPTED_FORMATS:
            raise PasskeyError("attestation", "This kind of authenticator is not supported.")
        try:
            verified = verify_registration_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=self.rp_id,
                expected_origin=self.origin,
                require_user_verification=True,  # py_webauthn's default is False
            )
        except Exception as exc:
            raise PasskeyError("attestation", "The passkey could not be verified.") from exc
        # py_webauthn returns the id from the signed authenticator data without comparing it to rawId.
        # And the spec caps an id at 1023 bytes: a longer one (an unsigned "none" attestation lets
        # the client pick it) would be a 20 KB removal URL that proxies refuse.
        if verified.credential_id != credential.raw_id or len(verified.credential_id) > MAX_CREDENTIAL_ID:
            raise PasskeyError("malformed", "The passkey response was malformed.")
        return NewPasskey(
            credential_id=verified.credential_id,
            public_key=verified.credential_public_key,
            sign_count=verified.sign_count,
            backed_up=verified.credential_backed_up,
            backup_eligible=attestation.auth_data.flags.be,
            transports=tuple(t.value for t in credential.response.transports or []),
            aaguid=verified.aaguid,
            discoverable=_cred_props_rk(data),
        )

    def verify_authentication(
        self,
        credential_json: str | Mapping[str, Any],
        challenge: bytes,
        *,
        public_key: bytes,
        sign_count: int,
        backup_eligible: bool,
        user_handle: bytes | None,
    ) -> UsedPasskey:
        """Check a navigator.credentials.get() response against the stored passkey; PasskeyError if refused.

        `user_handle` is the stored owner's handle: given, the assertion must name that account
        (discoverable sign-in); None when the user was known before the ceremony.
        """
        data = _load(credential_json)
        try:
            credential = parse_authentication_credential_json(data)
            auth_data = parse_authenticator_data(credential.response.authenticator_data)
        except Exception as exc:
            raise PasskeyError("malformed", "The passkey response was malformed.") from exc
        self._check_client_data(credential.response.client_data_json, ClientDataType.WEBAUTHN_GET, challenge)
        self._check_authenticator_data(auth_data)
        if user_handle is not None and credential.response.user_handle != user_handle:
            raise PasskeyError("user_handle", "This passkey belongs to another account.")
        try:
            verified = verify_authentication_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=self.rp_id,
                expected_origin=self.origin,
                credential_public_key=public_key,
                # py_webauthn compares counters before it checks the signature; 0 turns that off
                # so the clone alarm below only sounds for a response the key really signed.
                credential_current_sign_count=0,
                require_user_verification=True,
            )
        except Exception as exc:
            raise PasskeyError("signature", "The passkey signature could not be verified.") from exc
        new_count = verified.new_sign_count
        # Authenticators without a counter always say 0; one that counts must always go up.
        if (new_count > 0 or sign_count > 0) and new_count <= sign_count:
            raise PasskeyError("counter", "This passkey's counter went backwards: it may have been cloned.")
        if auth_data.flags.be != backup_eligible:
            raise PasskeyError("backup_state", "This passkey's backup eligibility changed.")
        return UsedPasskey(
            credential_id=verified.credential_id,
            sign_count=new_count,
            backed_up=verified.credential_backed_up,
        )

    # py_webauthn makes these checks too, but its messages quote client-supplied values and are
    # not a stable interface; checking first gives each refusal a short, safe, testable reason.

    def _check_client_data(self, raw: bytes, expected_type: ClientDataType, challenge: bytes) -> None:
        try:
            client = parse_client_data_json(raw)
        except Exception as exc:
            raise PasskeyError("malformed", "The passkey response was malformed.") from exc
        if client.type != expected_type:
            raise PasskeyError("malformed", "The passkey response was for another ceremony.")
        if not isinstance(client.challenge, bytes) or not hmac.compare_digest(client.challenge, challenge):
            raise PasskeyError("challenge", "The passkey request expired or was already used. Try again.")
        if client.origin != self.origin:
            raise PasskeyError("origin", "The passkey was used on another site.")
        # py_webauthn parses crossOrigin but never checks it; we are never framed by another site.
        if client.cross_origin:
            raise PasskeyError("origin", "The passkey was used inside another site's frame.")

    def _check_authenticator_data(self, auth_data: AuthenticatorData) -> None:
        expected = hashlib.sha256(self.rp_id.encode()).digest()
        if not hmac.compare_digest(auth_data.rp_id_hash, expected):
            raise PasskeyError("rp_id", "The passkey is for another site.")
        if not auth_data.flags.up:
            raise PasskeyError("user_presence", "The authenticator did not confirm your presence.")
        if not auth_data.flags.uv:
            raise PasskeyError("user_verification", "The authenticator did not verify you (PIN, biometric).")
        if auth_data.flags.bs and not auth_data.flags.be:
            raise PasskeyError("backup_state", "The authenticator reported impossible backup flags.")


def read_assertion(credential_json: str | Mapping[str, Any]) -> Assertion:
    """The credential id and userHandle an assertion claims, to find the stored key; nothing verified."""
    data = _load(credential_json)
    try:
        credential = parse_authentication_credential_json(data)
    except Exception as exc:
        raise PasskeyError("malformed", "The passkey response was malformed.") from exc
    return Assertion(credential_id=credential.raw_id, user_handle=credential.response.user_handle)


def _load(credential_json: str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(credential_json, Mapping):
        return dict(credential_json)
    if len(credential_json) > MAX_CREDENTIAL_JSON:
        raise PasskeyError("malformed", "The passkey response was malformed.")
    try:
        data = json.loads(credential_json)
    except (ValueError, RecursionError) as exc:  # RecursionError: thousands of nested [ within the size limit
        raise PasskeyError("malformed", "The passkey response was malformed.") from exc
    if not isinstance(data, dict):
        raise PasskeyError("malformed", "The passkey response was malformed.")
    return data


def _cred_props_rk(data: Mapping[str, Any]) -> bool | None:
    results = data.get("clientExtensionResults")
    props = results.get("credProps") if isinstance(results, dict) else None
    rk = props.get("rk") if isinstance(props, dict) else None
    return rk if isinstance(rk, bool) else None
