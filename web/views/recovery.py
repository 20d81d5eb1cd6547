"""Forgotten passwords: ask for a link by mail, then choose a new password with it."""

from __future__ import annotations

from beanie import PydanticObjectId
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from web import metrics, notices
from web.accounts import NOBODY, end_sessions, mark_verified
from web.audit import audit
from web.auth.users import User, normalise_email
from web.errors import LinkGone, log, outage
from web.forms import done, email_problem, form_page, read_form
from web.security import client_ip, client_network
from web.services import services
from web.sessions import session_of

FORGOT = "pages/forgot.html"
RESET = "pages/reset.html"
ON_ITS_WAY = "If an account exists for that address, a link to reset its password is on its way."
RESET_DONE = "Your password was changed and every session was signed out. Sign in with the new one."
GONE = "This link has expired or was already used. You can ask for a new one."
HOLD_SIGN_INS_S = 30  # at most: a reset stuck half-way (a database gone) holds them no longer


async def forgot_page(request: Request) -> Response:
    return form_page(request, FORGOT, values={"email": ""})


async def forgot(request: Request) -> Response:
    """The same page, status and work before the answer, whether the address is known, unknown or
    throttled; the link is made and mailed after it."""
    svc = services(request)
    values = await read_form(request, "email")
    email = normalise_email(values["email"])
    if problem := email_problem(email):
        return form_page(request, FORGOT, values=values, errors={"email": problem}, status=422)
    ip = client_ip(request)
    user_id = await User.id_by_email(email)
    allowed = not await svc.throttle.reserve(svc.throttle.reset_mail(email, client_network(ip)))
    # The version before the document: the link dies with the next credential change.
    version = await svc.store.version(user_id or NOBODY)
    user = await User.get(PydanticObjectId(user_id or NOBODY))
    # No address in the line: for an unknown one it would be a list of what people typed.
    audit("password_reset_requested", ip=ip, user_id=str(user.id) if user else None, mailed=allowed)
    response = form_page(request, FORGOT, values={"email": ""}, notice=ON_ITS_WAY)
    if allowed and user is not None:
        # Only once the answer is out: making the link and queuing its mail (which wakes this
        # process's sender) took a few milliseconds that an unknown address did not, enough to
        # tell the two apart by timing.
        response.background = BackgroundTask(_mail_reset_link, request, user, version)
    return response


async def _mail_reset_link(request: Request, user: User, version: int) -> None:
    """After the answer: a failure has no page left to become, so it is logged here (and the
    owner, who saw "on its way" and got nothing, asks again)."""
    try:
        await notices.password_reset(request, user, version=version)
    except Exception as exc:
        if service := outage(exc):
            metrics.service_error(service)
            log.warning("%s unavailable while mailing a reset link: %r", service, exc)
        else:
            log.exception("mailing a reset link failed")


async def _reset_target(request: Request) -> tuple[str, User]:
    """The token of the URL and its user, if the link is still good; else a 410 page."""
    svc = services(request)
    raw = request.path_params["token"]
    token = await svc.tokens.peek("reset", raw)
    user = await User.get(PydanticObjectId(token.user_id)) if token else None
    if token is None or user is None or token.data.get("version") != await svc.store.version(token.user_id):
        raise LinkGone(GONE, again="forgot_password")
    return raw, user


async def reset_page(request: Request) -> Response:
    # Shows the form and changes nothing: mail scanners fetch links, and must not use them up.
    await _reset_target(request)
    return form_page(request, RESET, values={}, min_length=services(request).passwords.min_length)


async def reset(request: Request) -> Response:
    svc = services(request)
    raw, user = await _reset_target(request)
    values = await read_form(request, "new_password")
    new = values["new_password"]
    problem = svc.passwords.problem(new, email=user.email) if new else "Choose a new password."
    if problem:  # the link stays good: nothing was used up
        errors = {"new_password": problem}
        return form_page(
            request, RESET, values={}, errors=errors, status=422, min_length=svc.passwords.min_length
        )
    new_hash = await svc.passwords.hash(new)
    token = await svc.tokens.consume("reset", raw)
    # Used by a request that raced this one, or voided since; claimed before anything is
    # written, so of this and a password or address change racing it, one goes through.
    if token is None or await svc.store.claim(str(user.id), token.data.get("version", -1)) is None:
        raise LinkGone(GONE, again="forgot_password")
    # Whoever had the old password (or, for an account made with someone else's address, its
    # maker's factors) may be signed in, or signing in. While sign-ins are held no session of the
    # account can be made, and the first sweep ends those there are: from then until the release,
    # no request of the account has a live session, so none can add a factor after reading the
    # new document (twofactor._still_signed_in). The second sweep moves the epoch again, so that
    # a sign-in that read the old document finds it moved once sign-ins are released.
    user_id = str(user.id)
    fields: dict[str, object] = {"password_hash": new_hash}
    unconfirmed = user.email_verified_at is None
    if unconfirmed:
        # The link came to this address: it is the owner's, and the account may have been made by
        # someone else (pre-hijacking). What they added goes: their passkeys, app and codes, and
        # the name they typed (it could be any text, and the owner would read it in every mail).
        # In the same write as the hash: a factor written under the old hash before this write is
        # wiped by it, and one written after it fails its filter (the hash it read is gone).
        fields |= {
            "totp_secret": None,
            "totp_last_step": None,
            "recovery_codes": [],
            "passkeys": [],
            "first_name": user.email.partition("@")[0],
            "last_name": "",
        }
    await svc.store.hold_sign_ins(user_id, HOLD_SIGN_INS_S)
    try:
        await end_sessions(request, user_id, reason="password_reset", bump_epoch=True)
        await user.set_fields(**fields)
        await end_sessions(request, user_id, reason="password_reset", bump_epoch=True)
    finally:
        await svc.store.release_sign_ins(user_id)
    if unconfirmed:
        await mark_verified(request, user)
    await svc.throttle.unlock(user.email)
    await notices.password_changed(request, user, how="reset with a link mailed to you")
    audit("password_reset", ip=client_ip(request), user_id=str(user.id))
    # Not signed in by the reset: a second factor, where there is one, must not be skipped.
    return done(request, await session_of(request).load(), RESET_DONE, "login")
