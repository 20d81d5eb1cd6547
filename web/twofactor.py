"""Second factors, as the views use them: TOTP (with recovery codes) and passkeys.

The primitives (codes, QR, WebAuthn verification) are in web/auth/totp.py and passkeys.py;
this module keeps their state: the TOTP secret sealed in the user document, the code being
enrolled sealed in the session, WebAuthn challenges single use in Redis, bound to the session.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass

from beanie import PydanticObjectId
from starlette.exceptions import HTTPException
from starlette.requests import Request

from web import notices
from web.audit import audit
from web.auth import totp
from web.auth.passkeys import PasskeyError, RelyingParty, read_assertion
from web.auth.users import Passkey, User
from web.crypto import SealError, SecretBox
from web.guard import SignedOut
from web.security import client_ip
from web.services import services
from web.sessions import Session

ALREADY_ON = "The authenticator app is already on. Turn it off first to change it."

CHALLENGE_TTL = 300  # seconds a passkey prompt may stay open
PENDING_TOTP = "totp_enrol"  # session data: the sealed secret being enrolled


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _box(request: Request) -> SecretBox:
    return SecretBox(services(request).settings.secret_keys, totp.SEAL_PURPOSE)


# -- TOTP ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Enrolment:
    secret: str
    uri: str
    qr: str


async def begin_totp(request: Request, session: Session, user: User) -> Enrolment:
    """A fresh secret, kept (sealed) in the session until a code from it is confirmed."""
    secret = totp.new_secret()
    session[PENDING_TOTP] = _box(request).seal(secret.encode())
    uri = totp.otpauth_uri(secret, user.email)
    return Enrolment(secret, uri, totp.qr_svg(uri))


async def confirm_totp(request: Request, session: Session, user: User, code: str) -> list[str] | None:
    """Turn TOTP on if `code` is right for the secret being enrolled; return the recovery codes."""
    sealed = session.get(PENDING_TOTP)
    if not sealed:
        return None
    try:
        secret = _box(request).open(sealed).decode()
    except SealError:
        return None
    step = totp.verify(secret, code, last_step=None, now=time.time())
    if step is None:
        return None
    codes = totp.new_recovery_codes()
    fields = {
        "totp_secret": _box(request).seal(secret.encode()),
        "totp_last_step": step,
        "recovery_codes": [totp.hash_recovery_code(c) for c in codes],
    }
    if not await _still_signed_in(request, session) or not await user.add_factor(
        {"$set": fields}, totp_secret=None
    ):
        now = await User.get(user.id)
        if now is not None and now.totp_secret is not None:  # turned on by another request
            raise HTTPException(409, ALREADY_ON)
        raise SignedOut  # the password was reset meanwhile: this session is over
    for name, value in fields.items():
        setattr(user, name, value)
    del session[PENDING_TOTP]
    return codes


async def _still_signed_in(request: Request, session: Session) -> bool:
    """Checked after the account was read and before a factor is written under its password
    hash: a reset ends every session before it writes the new hash, so a request that read that
    hash finds its session gone here, and one that read the old hash fails the write."""
    return session.digest is not None and await services(request).store.alive(session.digest)


async def check_code(request: Request, user: User, code: str) -> str | None:
    """ "totp" or "recovery" if `code` is a current TOTP code or an unused recovery code (each
    accepted once, even by requests racing with it); None otherwise."""
    if user.totp_secret is None:
        return None
    digits = code.replace(" ", "")
    if digits.isdigit():
        box = _box(request)
        try:
            secret = box.open(user.totp_secret).decode()
        except SealError:
            return None
        step = totp.verify(secret, digits, last_step=user.totp_last_step, now=time.time())
        if step is not None and await user.take_totp_step(step):
            if box.needs_reseal(user.totp_secret):  # sealed under a retiring SECRET_KEY
                await user.set_fields(totp_secret=box.seal(secret.encode()))
            return "totp"
        return None
    found = totp.match_recovery_code(code, user.recovery_codes)
    if found is not None and await user.take_recovery_code(found):
        await notices.recovery_code_used(request, user, left=len(user.recovery_codes))
        left = len(user.recovery_codes)
        audit("recovery_code_used", ip=client_ip(request), user_id=str(user.id), left=left)
        return "recovery"
    return None


async def new_recovery_codes(user: User) -> list[str]:
    codes = totp.new_recovery_codes()
    await user.set_fields(recovery_codes=[totp.hash_recovery_code(c) for c in codes])
    return codes


async def disable_totp(user: User) -> None:
    await user.set_fields(totp_secret=None, totp_last_step=None, recovery_codes=[])


# -- passkeys -----------------------------------------------------------------------------------


def relying_party(request: Request) -> RelyingParty:
    rp = services(request).relying_party
    if rp is None:
        raise PasskeyError("rp_id", "Passkeys need the site on a domain name (see PUBLIC_URL).")
    return rp


async def _challenge(request: Request, session: Session, purpose: str, challenge: bytes) -> None:
    # A challenge is bound to a session, so there must be one; one made just for it (a visitor
    # with no cookie) lasts as long as the challenge, unless the visitor goes on using it.
    await session.materialize(lasting=CHALLENGE_TTL)
    assert session.digest is not None
    await services(request).store.put_challenge(session.digest, purpose, _b64(challenge), CHALLENGE_TTL)


async def _take_challenge(request: Request, session: Session, purpose: str) -> bytes:
    taken = None
    if session.digest is not None:
        taken = await services(request).store.take_challenge(session.digest, purpose)
    if taken is None:
        raise PasskeyError("challenge", "The passkey request expired or was already used. Try again.")
    return _unb64(taken)


async def registration_options(request: Request, session: Session, user: User) -> str:
    """The options for navigator.credentials.create(), as JSON; the challenge is kept for 5 min."""
    # Random, not the user id: a passkey names an account without telling who it is. One per
    # account: of two first registrations at once, both get the handle that was stored first.
    handle = user.webauthn_handle or await user.keep_webauthn_handle(_b64(secrets.token_bytes(32)))
    options, challenge = relying_party(request).registration_options(
        _unb64(handle),
        user.email,
        user.display_name,
        exclude=[_unb64(p.id) for p in user.passkeys],
    )
    await _challenge(request, session, "register", challenge)
    return options


async def register(request: Request, session: Session, user: User, credential: str, name: str) -> Passkey:
    """Verify a new passkey against this session's challenge and add it to the account."""
    challenge = await _take_challenge(request, session, "register")
    made = relying_party(request).verify_registration(credential, challenge)
    if await User.find_one({"passkeys.id": _b64(made.credential_id)}) is not None:
        # On this account or another: sign-in finds accounts by user handle, so a copy would
        # not hijack, but one credential must name one passkey.
        raise PasskeyError("duplicate", "This passkey is already registered.")
    passkey = Passkey(
        id=_b64(made.credential_id),
        public_key=_b64(made.public_key),
        sign_count=made.sign_count,
        backup_eligible=made.backup_eligible,
        backed_up=made.backed_up,
        transports=list(made.transports),
        name=name or "Passkey",
    )
    if not await _still_signed_in(request, session) or not await user.add_passkey(passkey):
        if await User.find_one({"passkeys.id": passkey.id}) is not None:
            raise PasskeyError("duplicate", "This passkey is already registered.")  # a twin request won
        raise SignedOut  # the password was reset meanwhile: this session is over
    return passkey


async def sign_in_options(request: Request, session: Session, *, purpose: str = "sign_in") -> str:
    """Options for a discoverable sign-in (any passkey of this site), as JSON."""
    options, challenge = relying_party(request).authentication_options()
    await _challenge(request, session, purpose, challenge)
    return options


async def authenticate(
    request: Request, session: Session, credential: str, *, purpose: str
) -> tuple[User, int]:
    """The account a passkey assertion proves, checked against this session's challenge, and the
    account's credential epoch as read before its passkeys were (see views/auth.py)."""
    challenge = await _take_challenge(request, session, purpose)
    claimed = read_assertion(credential)
    handle = _b64(claimed.user_handle) if claimed.user_handle else None
    user_id = await User.id_by_webauthn_handle(handle) if handle else None
    if user_id is None or handle is None:
        raise PasskeyError("user_handle", "This passkey is not registered here.")
    epoch = await services(request).store.epoch(user_id)
    user = await User.get(PydanticObjectId(user_id))
    credential_id = _b64(claimed.credential_id)
    stored = next((p for p in user.passkeys if p.id == credential_id), None) if user else None
    if user is None or stored is None:
        raise PasskeyError("user_handle", "This passkey is not registered here.")
    try:
        used = relying_party(request).verify_authentication(
            credential,
            challenge,
            public_key=_unb64(stored.public_key),
            sign_count=stored.sign_count,
            backup_eligible=stored.backup_eligible,
            user_handle=_unb64(handle),
        )
        if not await user.passkey_used(credential_id, used.sign_count, used.backed_up):
            raise PasskeyError("counter", "This passkey's counter went backwards: it may have been cloned.")
    except PasskeyError as exc:
        # One of the account's own passkeys, refused: its owner's activity shows it (a bad
        # signature or a counter gone back is what a cloned authenticator looks like).
        exc.user_id = user_id
        raise
    return user, epoch
