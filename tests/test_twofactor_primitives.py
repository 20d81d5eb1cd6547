"""Second-factor primitives: TOTP, recovery codes, the QR code, and passkeys through real py_webauthn."""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from typing import Any

import cbor2
import pyotp
import pytest

from tests.helpers.authenticator import SoftAuthenticator, b64url, unb64url
from web.auth import totp
from web.auth.passkeys import NewPasskey, PasskeyError, RelyingParty, read_assertion
from web.crypto import SealError, SecretBox

NOW = 1_700_000_015.0  # 15 s into a 30 s step, so ±1 step is unambiguous
STEP = int(NOW // 30)
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
ORIGIN = "https://app.example.com"


def code_at(step: int, secret: str = SECRET) -> str:
    return pyotp.TOTP(secret).generate_otp(step)


# --- TOTP -------------------------------------------------------------------------------------


def test_new_secret_is_160_bits_of_base32() -> None:
    secret = totp.new_secret()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    assert len(base64.b32decode(secret)) == 20
    assert totp.new_secret() != secret


def test_otpauth_uri_names_issuer_and_account() -> None:
    uri = totp.otpauth_uri(SECRET, "alice@example.com")
    assert uri.startswith("otpauth://totp/Sessions:alice%40example.com?")
    parsed = pyotp.parse_uri(uri)
    assert parsed.secret == SECRET
    assert parsed.issuer == "Sessions"


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_code_within_one_step_is_accepted(offset: int) -> None:
    assert totp.verify(SECRET, code_at(STEP + offset), last_step=None, now=NOW) == STEP + offset


@pytest.mark.parametrize("offset", [-2, 2])
def test_code_two_steps_away_is_refused(offset: int) -> None:
    assert totp.verify(SECRET, code_at(STEP + offset), last_step=None, now=NOW) is None


def test_spaces_are_tolerated() -> None:
    code = code_at(STEP)
    assert totp.verify(SECRET, f" {code[:3]} {code[3:]} ", last_step=None, now=NOW) == STEP


def test_a_code_is_accepted_once() -> None:
    used = totp.verify(SECRET, code_at(STEP), last_step=None, now=NOW)
    assert used == STEP
    assert totp.verify(SECRET, code_at(STEP), last_step=used, now=NOW) is None
    assert totp.verify(SECRET, code_at(STEP), last_step=used, now=NOW + 20) is None  # still in the window


def test_an_earlier_step_is_refused_after_a_later_one() -> None:
    assert totp.verify(SECRET, code_at(STEP - 1), last_step=STEP, now=NOW) is None
    assert totp.verify(SECRET, code_at(STEP + 1), last_step=STEP, now=NOW) == STEP + 1


@pytest.mark.parametrize(
    "code",
    [
        "",
        "12345",
        "1234567",
        "12345a",
        "abcdef",
        "12-345",
        "\uff11\uff12\uff13\uff14\uff15\uff16",
        "\u0661\u0662\u0663\u0664\u0665\u0666",
        "\u00b2" * 6,
    ],
)
def test_anything_but_six_ascii_digits_is_refused(code: str) -> None:
    assert totp.verify(SECRET, code, last_step=None, now=NOW) is None


def test_wrong_secret_is_refused() -> None:
    assert totp.verify(totp.new_secret(), code_at(STEP), last_step=None, now=NOW) is None


def test_sealed_secret_opens_after_key_rotation() -> None:
    old, new = b"o" * 32, b"n" * 32
    secret = totp.new_secret()
    sealed = SecretBox((old,), totp.SEAL_PURPOSE).seal(secret.encode())
    assert secret not in sealed

    rotated = SecretBox((new, old), totp.SEAL_PURPOSE)
    opened = rotated.open(sealed).decode()
    assert totp.verify(opened, code_at(STEP, secret), last_step=None, now=NOW) == STEP
    assert rotated.needs_reseal(sealed)
    assert not rotated.needs_reseal(rotated.seal(opened.encode()))

    with pytest.raises(SealError):
        SecretBox((new,), totp.SEAL_PURPOSE).open(sealed)
    with pytest.raises(SealError):
        SecretBox((old,), "another-purpose").open(sealed)


# --- recovery codes ---------------------------------------------------------------------------


def test_recovery_codes_are_readable_and_80_bits() -> None:
    codes = totp.new_recovery_codes()
    alphabet = re.escape(totp.RECOVERY_ALPHABET)
    assert len(codes) == 10 and len(set(codes)) == 10
    for code in codes:
        assert re.fullmatch(rf"[{alphabet}]{{4}}(-[{alphabet}]{{4}}){{3}}", code)
    assert len(set(totp.RECOVERY_ALPHABET)) == 32  # 5 bits a character, 16 characters
    assert not set("ilou") & set(totp.RECOVERY_ALPHABET)
    assert len(totp.new_recovery_codes(3)) == 3


def test_recovery_code_hash_ignores_case_dashes_spaces_and_lookalikes() -> None:
    code = "0a1b-c2d3-e4f5-g6h7"
    expected = totp.hash_recovery_code(code)
    assert re.fullmatch(r"[0-9a-f]{64}", expected)
    for typed in ["0A1B-C2D3-E4F5-G6H7", "0a1bc2d3e4f5g6h7", " 0a1b c2d3 e4f5 g6h7 ", "Oalb-c2d3-e4f5-g6h7"]:
        assert totp.hash_recovery_code(typed) == expected
    assert totp.hash_recovery_code("0a1b-c2d3-e4f5-g6h8") != expected


def test_recovery_code_matches_its_own_hash_only() -> None:
    codes = totp.new_recovery_codes()
    hashes = [totp.hash_recovery_code(c) for c in codes]
    assert totp.match_recovery_code(codes[3].upper(), hashes) == hashes[3]
    remaining = [h for h in hashes if h != hashes[3]]
    assert totp.match_recovery_code(codes[3], remaining) is None  # single use, once removed
    assert totp.match_recovery_code(codes[4], remaining) == hashes[4]


@pytest.mark.parametrize("typed", ["", "0000-0000-0000-0000", "not a code at all", "0a1b-c2d3-e4f5"])
def test_wrong_recovery_code_matches_nothing(typed: str) -> None:
    hashes = [totp.hash_recovery_code(c) for c in totp.new_recovery_codes()]
    assert totp.match_recovery_code(typed, hashes) is None
    assert totp.match_recovery_code(typed, []) is None


# --- QR code ----------------------------------------------------------------------------------


def test_qr_svg_is_inline_accessible_and_style_free() -> None:
    svg = totp.qr_svg(totp.otpauth_uri(SECRET, "alice@example.com"))
    assert svg.startswith("<svg ") and svg.rstrip().endswith("</svg>")
    assert "style=" not in svg and "<style" not in svg and "<script" not in svg
    root = ET.fromstring(svg)  # noqa: S314 (our own markup, checked for being well-formed)
    assert root.get("role") == "img"
    assert root.get("aria-label")
    assert root.get("viewBox") and root.get("width") is None  # sized by CSS
    assert root.find("title") is not None


# --- passkeys ---------------------------------------------------------------------------------


@pytest.fixture
def rp() -> RelyingParty:
    return RelyingParty.from_public_url(ORIGIN, name="Sessions")


@pytest.fixture
def device() -> SoftAuthenticator:
    return SoftAuthenticator(ORIGIN)


USER = b"\x01" * 16


def register(rp: RelyingParty, device: SoftAuthenticator, **knobs: Any) -> NewPasskey:
    options, challenge = rp.registration_options(USER, "alice@example.com", "Alice", exclude=[])
    return rp.verify_registration(device.create(options, **knobs), challenge)


def sign_in(
    rp: RelyingParty, device: SoftAuthenticator, key: NewPasskey, *, count: int | None = None, **knobs: Any
) -> int:
    """A discoverable sign-in as the app does it: read, look up, verify. Returns the new count."""
    options, challenge = rp.authentication_options()
    response = device.get(options, **knobs)
    claimed = read_assertion(json.dumps(response))
    assert claimed.credential_id == key.credential_id
    used = rp.verify_authentication(
        response,
        challenge,
        public_key=key.public_key,
        sign_count=key.sign_count if count is None else count,
        backup_eligible=key.backup_eligible,
        user_handle=claimed.user_handle,
    )
    assert used.credential_id == key.credential_id
    return used.sign_count


def refused(reason: str) -> Any:
    return pytest.raises(PasskeyError, check=lambda e: e.reason == reason)


@pytest.mark.parametrize(
    ("url", "rp_id", "origin"),
    [
        ("https://app.example.com", "app.example.com", "https://app.example.com"),
        ("https://App.Example.com:443/some/path", "app.example.com", "https://app.example.com"),
        ("https://app.example.com:8443/", "app.example.com", "https://app.example.com:8443"),
        ("http://localhost:8000", "localhost", "http://localhost:8000"),
        ("http://app.localhost:8000", "app.localhost", "http://app.localhost:8000"),
    ],
)
def test_relying_party_from_public_url(url: str, rp_id: str, origin: str) -> None:
    party = RelyingParty.from_public_url(url)
    assert (party.rp_id, party.origin, party.name) == (rp_id, origin, "Sessions")


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000", "https://[::1]:8443", "http://app.example.com", "ftp://app.example.com", "app"],
)
def test_relying_party_refuses_what_browsers_refuse(url: str) -> None:
    with pytest.raises(ValueError, match=r"IP address|https"):
        RelyingParty.from_public_url(url)


def test_registration_options_ask_for_a_discoverable_verified_passkey(rp: RelyingParty) -> None:
    options, challenge = rp.registration_options(USER, "alice@example.com", "Alice", exclude=[b"old-key"])
    parsed = json.loads(options)
    assert unb64url(parsed["challenge"]) == challenge and len(challenge) >= 16
    assert parsed["rp"] == {"id": "app.example.com", "name": "Sessions"}
    assert parsed["user"] == {"id": b64url(USER), "name": "alice@example.com", "displayName": "Alice"}
    assert parsed["authenticatorSelection"] == {
        "residentKey": "required",
        "requireResidentKey": True,
        "userVerification": "required",
    }
    assert parsed["attestation"] == "none"
    assert parsed["excludeCredentials"] == [{"id": b64url(b"old-key"), "type": "public-key"}]
    assert parsed["timeout"] == 300_000
    assert parsed["extensions"] == {"credProps": True}
    with pytest.raises(ValueError, match="user handle"):
        rp.registration_options(b"", "alice@example.com", "Alice", exclude=[])


def test_authentication_options_are_discoverable_unless_told(rp: RelyingParty) -> None:
    options, challenge = rp.authentication_options()
    parsed = json.loads(options)
    assert unb64url(parsed["challenge"]) == challenge
    assert parsed["allowCredentials"] == [] and parsed["userVerification"] == "required"
    assert parsed["rpId"] == "app.example.com"
    allowed = json.loads(rp.authentication_options(allow=[b"key"])[0])["allowCredentials"]
    assert allowed == [{"id": b64url(b"key"), "type": "public-key"}]
    assert rp.authentication_options()[1] != challenge


@pytest.mark.parametrize("attestation", ["none", "packed"])
def test_register_and_sign_in(rp: RelyingParty, device: SoftAuthenticator, attestation: str) -> None:
    key = register(rp, device, attestation=attestation)
    assert key.credential_id == device.credentials[0].credential_id
    assert key.sign_count == 1 and key.discoverable is True
    assert key.transports == ("hybrid", "internal")
    assert key.aaguid == "5e0f7e5d-1a2b-4c3d-8e9f-00112233aabb"
    assert (key.backup_eligible, key.backed_up) == (False, False)
    assert sign_in(rp, device, key) == 2
    assert sign_in(rp, device, key, count=2) == 3


def test_synced_passkey_flags_and_zero_counter(rp: RelyingParty) -> None:
    device = SoftAuthenticator(ORIGIN, backup_eligible=True, backed_up=True, counter_step=0)
    key = register(rp, device)
    assert (key.backup_eligible, key.backed_up, key.sign_count) == (True, True, 0)
    assert sign_in(rp, device, key) == 0  # no counter at all is allowed...
    assert sign_in(rp, device, key) == 0


def test_sign_in_with_an_allow_list(rp: RelyingParty, device: SoftAuthenticator) -> None:
    key = register(rp, device)
    options, challenge = rp.authentication_options(allow=[key.credential_id])
    used = rp.verify_authentication(
        device.get(options),
        challenge,
        public_key=key.public_key,
        sign_count=key.sign_count,
        backup_eligible=False,
        user_handle=None,
    )
    assert used.sign_count == 2


@pytest.mark.parametrize(
    ("knobs", "reason"),
    [
        ({"origin": "https://app.example.com.evil.test"}, "origin"),
        ({"user_verified": False}, "user_verification"),
        ({"user_present": False}, "user_presence"),
        ({"challenge": b"an old challenge from another ceremony"}, "challenge"),
    ],
)
def test_registration_refused(
    rp: RelyingParty, device: SoftAuthenticator, knobs: dict[str, Any], reason: str
) -> None:
    with refused(reason):
        register(rp, device, **knobs)


def test_registration_for_another_rp_id_refused(rp: RelyingParty) -> None:
    with refused("rp_id"):
        register(rp, SoftAuthenticator(ORIGIN, rp_id="example.org"))


def test_registration_with_an_untrusted_attestation_format_refused(
    rp: RelyingParty, device: SoftAuthenticator
) -> None:
    options, challenge = rp.registration_options(USER, "alice@example.com", "Alice", exclude=[])
    response = device.create(options)
    attestation = cbor2.loads(unb64url(response["response"]["attestationObject"]))
    attestation["fmt"] = "fido-u2f"
    response["response"]["attestationObject"] = b64url(cbor2.dumps(attestation))
    with refused("attestation"):
        rp.verify_registration(response, challenge)


def test_registration_with_a_forged_packed_signature_refused(
    rp: RelyingParty, device: SoftAuthenticator
) -> None:
    options, challenge = rp.registration_options(USER, "alice@example.com", "Alice", exclude=[])
    response = device.create(options, attestation="packed")
    attestation = cbor2.loads(unb64url(response["response"]["attestationObject"]))
    attestation["attStmt"]["sig"] = flip_last_byte(attestation["attStmt"]["sig"])
    response["response"]["attestationObject"] = b64url(cbor2.dumps(attestation))
    with refused("attestation"):
        rp.verify_registration(response, challenge)


def test_registration_with_a_swapped_credential_id_refused(
    rp: RelyingParty, device: SoftAuthenticator
) -> None:
    options, challenge = rp.registration_options(USER, "alice@example.com", "Alice", exclude=[])
    response = device.create(options)
    response["id"] = response["rawId"] = b64url(b"someone else's credential id")
    with refused("malformed"):
        rp.verify_registration(response, challenge)


@pytest.mark.parametrize(
    ("knobs", "reason"),
    [
        ({"origin": "https://app-example.com"}, "origin"),
        ({"cross_origin": True}, "origin"),
        ({"claim_rp_id": "example.org"}, "rp_id"),
        ({"user_verified": False}, "user_verification"),
        ({"sign_count_override": 1}, "counter"),  # the stored count is 1: not an increase
        ({"sign_count_override": 0}, "counter"),  # a counting key may not drop back to 0
        ({"backup_eligible": True}, "backup_state"),  # BE is fixed at registration
        ({"backed_up": True}, "backup_state"),  # BS without BE is impossible
    ],
)
def test_sign_in_refused(
    rp: RelyingParty, device: SoftAuthenticator, knobs: dict[str, Any], reason: str
) -> None:
    key = register(rp, device)
    with refused(reason):
        sign_in(rp, device, key, **knobs)


def test_reused_challenge_refused(rp: RelyingParty, device: SoftAuthenticator) -> None:
    key = register(rp, device)
    old_options, _ = rp.authentication_options()
    replayed = device.get(old_options)  # an assertion for a ceremony that is over
    _, current = rp.authentication_options()
    with refused("challenge"):
        rp.verify_authentication(
            replayed,
            current,
            public_key=key.public_key,
            sign_count=1,
            backup_eligible=False,
            user_handle=USER,
        )


def test_counter_going_backwards_refused(rp: RelyingParty, device: SoftAuthenticator) -> None:
    key = register(rp, device)
    latest = sign_in(rp, device, key)
    latest = sign_in(rp, device, key, count=latest)
    with refused("counter"):
        sign_in(rp, device, key, count=latest, sign_count_override=latest - 1)


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


@pytest.mark.parametrize("field", ["signature", "authenticatorData", "clientDataJSON"])
def test_tampered_assertion_refused(rp: RelyingParty, device: SoftAuthenticator, field: str) -> None:
    key = register(rp, device)
    options, challenge = rp.authentication_options()
    response = device.get(options)
    if field == "clientDataJSON":  # same challenge and origin, one more member: still signed over
        client_data = json.loads(unb64url(response["response"][field]))
        client_data["other_keys_can_be_added_here"] = "x"
        response["response"][field] = b64url(json.dumps(client_data).encode())
    else:  # the last byte of the signature, or the counter's low byte (a higher count)
        response["response"][field] = b64url(flip_last_byte(unb64url(response["response"][field])))
    with refused("signature"):
        rp.verify_authentication(
            response,
            challenge,
            public_key=key.public_key,
            sign_count=1,
            backup_eligible=False,
            user_handle=USER,
        )


def test_forged_low_counter_reports_the_signature_not_a_clone(
    rp: RelyingParty, device: SoftAuthenticator
) -> None:
    key = register(rp, device)
    options, challenge = rp.authentication_options()
    response = device.get(options, sign_count_override=0)
    response["response"]["signature"] = b64url(flip_last_byte(unb64url(response["response"]["signature"])))
    with refused("signature"):
        rp.verify_authentication(
            response,
            challenge,
            public_key=key.public_key,
            sign_count=5,
            backup_eligible=False,
            user_handle=USER,
        )


def test_another_passkeys_public_key_refused(rp: RelyingParty, device: SoftAuthenticator) -> None:
    key = register(rp, device)
    other = register(rp, SoftAuthenticator(ORIGIN))
    options, challenge = rp.authentication_options()
    with refused("signature"):
        rp.verify_authentication(
            device.get(options, credential_id=key.credential_id),
            challenge,
            public_key=other.public_key,
            sign_count=0,
            backup_eligible=False,
            user_handle=USER,
        )


def test_assertion_for_another_account_refused(rp: RelyingParty, device: SoftAuthenticator) -> None:
    key = register(rp, device)
    options, challenge = rp.authentication_options()
    with refused("user_handle"):
        rp.verify_authentication(
            device.get(options),
            challenge,
            public_key=key.public_key,
            sign_count=1,
            backup_eligible=False,
            user_handle=b"\x02" * 16,
        )


def test_register_excluded_credential_is_refused_by_the_authenticator(
    rp: RelyingParty, device: SoftAuthenticator
) -> None:
    key = register(rp, device)
    options, _ = rp.registration_options(USER, "alice@example.com", "Alice", exclude=[key.credential_id])
    with pytest.raises(Exception, match="InvalidStateError"):
        device.create(options)


MALFORMED: list[Any] = [
    "",
    "not json",
    "[]",
    "{}",
    {"id": "x", "rawId": "x", "type": "public-key"},
    {"id": "x", "rawId": "x", "type": "public-key", "response": {"clientDataJSON": 5}},
    "x" * 100_000,
]


@pytest.mark.parametrize("response", MALFORMED)
def test_malformed_responses_refused(rp: RelyingParty, response: Any) -> None:
    with refused("malformed"):
        rp.verify_registration(response, b"c" * 32)
    with refused("malformed"):
        read_assertion(response)
    with refused("malformed"):
        rp.verify_authentication(
            response, b"c" * 32, public_key=b"", sign_count=0, backup_eligible=False, user_handle=None
        )


def test_truncated_or_garbled_bytes_refused(rp: RelyingParty, device: SoftAuthenticator) -> None:
    """Whatever the bytes, a refusal is a PasskeyError, never another exception."""
    key = register(rp, device)
    options, challenge = rp.authentication_options()
    good = device.get(options)
    for field in ["clientDataJSON", "authenticatorData", "signature", "userHandle"]:
        raw = unb64url(good["response"][field])
        variants = [b64url(b) for b in (b"", raw[:10], raw[:-1], b"\xff" * len(raw))]
        for broken in [*variants, "!!not base64!!", None, 7]:
            response = json.loads(json.dumps(good))
            response["response"][field] = broken
            with pytest.raises(PasskeyError):
                rp.verify_authentication(
                    response,
                    challenge,
                    public_key=key.public_key,
                    sign_count=1,
                    backup_eligible=False,
                    user_handle=USER,
                )
