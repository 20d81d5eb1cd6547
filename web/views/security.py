"""The security page: passkeys, the authenticator app (TOTP), recovery codes.

Every change here needs a recent authentication (sudo mode, see web/guard.py), bumps the
credential epoch (a sign-in under way must start again under the new rules) and mails a notice.
Taking a factor away also ends every other session: whoever added it may be signed in with it.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from web import notices, twofactor
from web.accounts import current_user, end_sessions
from web.audit import audit
from web.auth.passkeys import PasskeyError
from web.forms import NAME_MAX, done, form_page, read_form, take_flash, text_problem
from web.guard import SignedIn, signed_in
from web.htmx import is_htmx, json_reply, redirect, wants_json
from web.security import client_ip
from web.services import services
from web.templating import render

PAGE = "pages/security.html"
TOTP_PAGE = "pages/totp.html"
CODES_PAGE = "pages/recovery_codes.html"
TOTP_ON = "The authenticator app is on: sign-ins now ask for a code from it."
TOTP_OFF = "The authenticator app is off, and every other session was signed out."
PASSKEY_REMOVED = "The passkey was removed, and every other session was signed out."
RENAMED = "The passkey was renamed."


async def _changed(request: Request, me: SignedIn, what: str, *, removed: bool) -> None:
    """After any change of factors: the epoch, the other sessions if one was taken away, a
    notice mailed to the account, an audit line."""
    user = await current_user(me)
    if removed:
        await end_sessions(request, me.user.id, keep=me.session, reason="factor_removed", bump_epoch=True)
    else:
        await services(request).store.bump_epoch(me.user.id)
    await notices.factors_changed(request, user, what)
    audit("factor_changed", ip=client_ip(request), user_id=me.user.id, change=what)


@signed_in
async def security_page(request: Request, me: SignedIn) -> Response:
    user = await current_user(me)
    context = {
        "account": user,
        "notice": take_flash(me.session),
        "passkeys_on": services(request).relying_party,
    }
    return render(request, PAGE, context, block="factors" if is_htmx(request) else None)


# -- the authenticator app ----------------------------------------------------------------------


@signed_in(recent=True)
async def totp_page(request: Request, me: SignedIn) -> Response:
    if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        # A link from another site (or a sibling subdomain): showing a new secret would void the
        # one the owner's app may have just scanned (a cookie goes with a top-level GET).
        return redirect(request, "security")
    user = await current_user(me)
    if user.totp_secret is not None:
        raise HTTPException(409, twofactor.ALREADY_ON)
    enrolment = await twofactor.begin_totp(request, me.session, user)
    if wants_json(request):
        return json_reply({"secret": enrolment.secret, "otpauth_uri": enrolment.uri})
    return form_page(request, TOTP_PAGE, values={}, enrolment=enrolment)


@signed_in(recent=True)
async def enable_totp(request: Request, me: SignedIn) -> Response:
    user = await current_user(me)
    if user.totp_secret is not None:  # a new secret would replace the owner's app unannounced
        raise HTTPException(409, twofactor.ALREADY_ON)
    code = (await read_form(request, "code"))["code"]
    codes = await twofactor.confirm_totp(request, me.session, user, code)
    if codes is None:
        if wants_json(request):
            return json_reply({"error": "That code is not right. Try the one your app shows now."}, 422)
        # A new secret: the old one was shown on a page that may have been left open.
        enrolment = await twofactor.begin_totp(request, me.session, user)
        errors = {"code": "That code is not right. Scan the new QR code and try its current code."}
        return form_page(request, TOTP_PAGE, values={}, errors=errors, status=422, enrolment=enrolment)
    await _changed(request, me, "authenticator app turned on", removed=False)
    return _codes(request, codes, TOTP_ON)


def _codes(request: Request, codes: list[str], notice: str) -> Response:
    if wants_json(request):
        return json_reply({"recovery_codes": codes})
    if is_htmx(request):
        # Shown once: they take the whole page, in place of the form that asked for them.
        headers = {"HX-Retarget": "#main", "HX-Reswap": "innerHTML"}
        return render(
            request, CODES_PAGE, {"codes": codes, "notice": notice}, block="content", headers=headers
        )
    return render(request, CODES_PAGE, {"codes": codes, "notice": notice})


@signed_in(recent=True)
async def disable_totp(request: Request, me: SignedIn) -> Response:
    user = await current_user(me)
    await twofactor.disable_totp(user)
    await _changed(request, me, "authenticator app turned off", removed=True)
    return done(request, me.session, TOTP_OFF, "security", await _factors(request, me, TOTP_OFF))


@signed_in(recent=True)
async def recovery_codes(request: Request, me: SignedIn) -> Response:
    user = await current_user(me)
    if user.totp_secret is None:
        raise HTTPException(409, "Recovery codes come with the authenticator app: turn it on first.")
    codes = await twofactor.new_recovery_codes(user)
    await _changed(request, me, "new recovery codes made (the old ones no longer work)", removed=False)
    return _codes(request, codes, "New recovery codes: the old ones no longer work.")


# -- passkeys -----------------------------------------------------------------------------------


@signed_in(recent=True)
async def passkey_options(request: Request, me: SignedIn) -> Response:
    user = await current_user(me)
    try:
        options = await twofactor.registration_options(request, me.session, user)
    except PasskeyError as exc:
        return json_reply({"error": str(exc)}, 400)
    return Response(options, media_type="application/json", headers={"Cache-Control": "no-store"})


@signed_in(recent=True)
async def add_passkey(request: Request, me: SignedIn) -> Response:
    user = await current_user(me)
    values = await read_form(request, "credential", "name")
    name = values["name"].strip() or "Passkey"
    if problem := text_problem(name, "passkey's name", NAME_MAX):
        return json_reply({"error": problem}, 422)
    try:
        passkey = await twofactor.register(request, me.session, user, values["credential"], name)
    except PasskeyError as exc:
        audit("passkey_refused", ip=client_ip(request), user_id=me.user.id, reason=exc.reason)
        return json_reply({"error": str(exc)}, 400)
    # Not its name: whoever added it chose that text, and this mail is the owner's alarm.
    await _changed(request, me, "a passkey added", removed=False)
    return json_reply({"added": passkey.name})


def _passkey_id(request: Request) -> str:
    found: str = request.path_params["id"]
    return found


@signed_in
async def rename_passkey(request: Request, me: SignedIn) -> Response:
    user = await current_user(me)
    name = (await read_form(request, "name"))["name"].strip()
    if problem := text_problem(name, "passkey's name", NAME_MAX):
        raise HTTPException(422, problem)
    if not await user.rename_passkey(_passkey_id(request), name):
        raise HTTPException(404, "There is no such passkey on your account.")
    return done(request, me.session, RENAMED, "security", await _factors(request, me, RENAMED))


@signed_in(recent=True)
async def remove_passkey(request: Request, me: SignedIn) -> Response:
    user = await current_user(me)
    if len(user.passkeys) == 1 and not user.password_hash:
        raise HTTPException(409, "This is your only way to sign in: add another before removing it.")
    if not await user.remove_passkey(_passkey_id(request)):
        raise HTTPException(404, "There is no such passkey on your account.")
    await _changed(request, me, "passkey removed", removed=True)
    return done(
        request, me.session, PASSKEY_REMOVED, "security", await _factors(request, me, PASSKEY_REMOVED)
    )


async def _factors(request: Request, me: SignedIn, notice: str) -> Response:
    """The security page's list of factors, for htmx to swap in place."""
    user = await current_user(me)
    context = {"account": user, "notice": notice, "passkeys_on": services(request).relying_party}
    return render(request, PAGE, context, block="factors")
