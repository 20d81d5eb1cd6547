"""The account's email address: confirming it, asking for the link again, changing it."""

from __future__ import annotations

from beanie import PydanticObjectId
from pymongo.errors import DuplicateKeyError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from web import notices
from web.accounts import check_password, current_user, mark_verified
from web.audit import audit
from web.auth.tokens import Token
from web.auth.users import User, normalise_email
from web.errors import LinkGone
from web.forms import done, email_problem, form_page, page_of, read_form, take_flash, throttled
from web.guard import SignedIn, signed_in
from web.htmx import json_reply, wants_json
from web.security import client_ip
from web.services import services
from web.sessions import session_of
from web.templating import render

RACED = "Your account changed while this was being asked for, so no link was sent. Try again."
GONE = "This link has expired, was already used, or was replaced by a newer one."
VERIFIED = "Thank you: your email address is confirmed."
CHANGED = "Your email address was changed. Sign in with the new one from now on."
TAKEN = "An account with this email address already exists."
RESENT = "A new confirmation link is on its way to your inbox."
ASKED = "Check the inbox of your new address: the change is made once you open the link in it."
EMAIL_PAGE = "pages/email.html"


@signed_in
async def account_page(request: Request, me: SignedIn) -> Response:
    """The account at a glance; `Accept: application/json` gets the facts as JSON."""
    user = await current_user(me)
    if wants_json(request):
        body = {
            "email": user.email,
            "email_verified": user.email_verified_at is not None,
            "two_factor": {
                "totp": user.totp_secret is not None,
                "passkeys": len(user.passkeys),
                "recovery_codes_left": len(user.recovery_codes),
            },
        }
        response = json_reply(body)
        response.headers.add_vary_header("Accept")
        return response
    return render(request, "pages/account.html", {"account": user, "notice": take_flash(me.session)})


# -- confirming an address, from the link in the mail (in any browser, signed in or not) ------


async def _target(request: Request) -> tuple[Token, User]:
    """The verification token of the URL and its user, while the link is still good."""
    svc = services(request)
    token = await svc.tokens.peek("verify", request.path_params["token"])
    user = await User.get(PydanticObjectId(token.user_id)) if token else None
    if token is None or user is None or not await _still_good(request, token, user):
        raise LinkGone(GONE, again="account")
    return token, user


async def _still_good(request: Request, token: Token, user: User) -> bool:
    if "version" in token.data:  # an address change dies with a change of credentials (see change_email)
        now = await services(request).store.version_and_epoch(str(user.id))
        return now == (token.data["version"], token.data.get("epoch", now[1]))
    return bool(token.data["email"] == user.email)  # confirms the address it was sent to


async def verify_page(request: Request) -> Response:
    # A button, not an action: mail scanners fetch links and must not confirm anything.
    token, user = await _target(request)
    change = token.data["email"] != user.email
    return render(request, "pages/verify.html", {"address": token.data["email"], "change": change})


async def verify(request: Request) -> Response:
    svc = services(request)
    _, user = await _target(request)
    token = await svc.tokens.consume("verify", request.path_params["token"])
    if token is None:
        raise LinkGone(GONE, again="account")
    if "version" in token.data:
        # An address change is a change of credentials: claimed before it is written, so of it
        # and a reset racing it, one goes through. Links mailed to the old address (a reset,
        # say) must not outlive it: they die with the version.
        claim = svc.store.claim(str(user.id), token.data["version"], epoch=token.data.get("epoch"))
        good = await claim is not None
    else:
        good = await _still_good(request, token, user)
    if not good:
        raise LinkGone(GONE, again="account")
    address, ip = token.data["email"], client_ip(request)
    session = await session_of(request).load()
    if address == user.email:
        await mark_verified(request, user)
        audit("email_verified", ip=ip, user_id=str(user.id))
        return done(request, session, VERIFIED, "home")
    old = user.email
    try:
        await user.set_fields(email=address)
    except DuplicateKeyError:
        raise HTTPException(409, TAKEN) from None  # taken since the change was asked for
    await mark_verified(request, user)
    await notices.email_changed(request, user, old, address, done=True)
    audit("email_changed", ip=ip, user_id=str(user.id))
    return done(request, session, CHANGED, "home")


@signed_in
async def resend_verification(request: Request, me: SignedIn) -> Response:
    svc = services(request)
    user = await current_user(me)
    if user.email_verified_at is not None:
        return done(request, me.session, VERIFIED, "home")
    if wait := await svc.throttle.reserve(svc.throttle.verify_mail(str(user.id))):
        message, headers = throttled(wait, "requests for a link")
        raise HTTPException(429, message, headers)
    if wait := await notices.link_allowed(request, user, user.email):
        message, headers = throttled(wait, "links to this address")
        raise HTTPException(429, message, headers)
    await notices.verify_email(request, user, user.email)
    fragment = render(request, "pages/home.html", {"notice": RESENT}, block="verify")
    return done(request, me.session, RESENT, "home", fragment)


# -- changing the address: confirmed from the new one, announced to the old one ---------------


@signed_in
async def email_page(request: Request, me: SignedIn) -> Response:
    user = await current_user(me)
    return form_page(
        request, EMAIL_PAGE, values={"new_email": ""}, current=user.email, notice=take_flash(me.session)
    )


@signed_in(recent=True)
async def change_email(request: Request, me: SignedIn) -> Response:
    svc = services(request)
    # Before the document and the check: what the link will be claimed against.
    version, epoch = await svc.store.version_and_epoch(me.user.id)
    user = await current_user(me)
    values = await read_form(request, "new_email", "current_password")
    new, password = normalise_email(values["new_email"]), values["current_password"]

    page = page_of(request, EMAIL_PAGE, values=values, current=user.email)

    errors = {}
    if problem := email_problem(new):
        errors["new_email"] = problem
    elif new == user.email:
        errors["new_email"] = "This is already your address."
    if not password:
        errors["current_password"] = "Enter your current password."
    if errors:
        return page(422, errors)

    checked = await check_password(request, user, password, event="email_change_failure")
    if checked is False:
        return page(401, {"current_password": "That is not your current password."})
    # Each request mails a link to the address it names: so many an hour, as for a resend. Counted
    # before "taken" is told, so that an account cannot ask about more addresses than that either.
    if checked is True and (wait := await svc.throttle.reserve(svc.throttle.verify_mail(str(user.id)))):
        checked = wait
    # Only after the password, and as limited as sign-up's 409: "taken" says an account exists.
    if checked is True and await User.id_by_email(new):
        wait = await svc.throttle.reserve(svc.throttle.taken_address(new))
        if not wait:
            return page(409, {"new_email": TAKEN})
        checked = wait
    # The address's own count too, before the claim: a refusal here leaves the link of an earlier
    # request good.
    if checked is True and (wait := await notices.link_allowed(request, user, new)):
        checked = wait
    if checked is not True:
        message, headers = throttled(checked)
        return form_page(
            request,
            EMAIL_PAGE,
            values=values,
            message=message,
            status=429,
            headers=headers,
            current=user.email,
        )
    # Asked for, not made: this moves the epoch only, while this session lives and nothing moved
    # since the check. The link carries the new epoch, so it dies with the next move: a newer
    # request (the link of a mistyped address), the owner ending this session or every other one,
    # "this wasn't me", or a change of factors. The version goes only when the change is made.
    claimed = await svc.store.claim(
        me.user.id, version, epoch=epoch, session=me.session.digest, move_version=False
    )
    if claimed is None:
        return page(409, message=RACED)
    await notices.verify_email(request, user, new, version=version, epoch=claimed)
    await notices.email_changed(request, user, user.email, new, done=False)
    audit("email_change_requested", ip=client_ip(request), user_id=str(user.id))
    fragment = form_page(request, EMAIL_PAGE, values={"new_email": ""}, notice=ASKED, current=user.email)
    return done(request, me.session, ASKED, "change_email", fragment)
