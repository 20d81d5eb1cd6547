"""Sign up, sign in, sign out."""

from __future__ import annotations

import contextlib
import logging
import secrets
import time

from beanie import PydanticObjectId
from pymongo.errors import DuplicateKeyError
from starlette.requests import Request
from starlette.responses import Response

from web import metrics, notices, twofactor
from web.accounts import NOBODY, handle, sign_in
from web.audit import audit
from web.auth.passkeys import PasskeyError
from web.auth.throttle import Limit
from web.auth.users import User, normalise_email
from web.forms import (
    NAME_MAX,
    done,
    email_problem,
    form_page,
    page_of,
    read_form,
    take_flash,
    text_problem,
    throttled,
)
from web.guard import SignedIn, signed_in
from web.htmx import is_htmx, json_reply, redirect, wants_json
from web.security import client_ip, client_network
from web.services import Services, services
from web.sessions import Session, StaleCredentials, session_of
from web.templating import render
from web.urls import path_for

BAD_CREDENTIALS = "Invalid email or password"
LOGIN_PAGE = "pages/login.html"
SIGNUP_PAGE = "pages/signup.html"
NOT_MAILED = (
    "Your account is ready, but this address has had several links in the last hour, so none was "
    "sent now. Ask for one in {minutes} minute{s}."
)


async def _release(svc: Services, limits: list[list[Limit]]) -> None:
    """Give back places reserved by an attempt that was never decided (an outage, a full queue)."""
    with contextlib.suppress(Exception):
        await svc.throttle.release(limits)


def _with_device(request: Request, response: Response, user_id: str) -> Response:
    """Mark this browser as one this account has signed in on (see auth/devices.py)."""
    devices = services(request).devices
    response.headers.append("set-cookie", devices.remember(devices.read(request), user_id))
    return response


# -- sign in --------------------------------------------------------------------------------


async def login_page(request: Request) -> Response:
    session = await session_of(request).load()
    if session.user:
        return redirect(request, "home")
    # A reset or a confirmed address ends here, with its message in the session (if any).
    notice = take_flash(session)
    # The most fetched page of all, the same for every visitor with no notice: rendered once.
    return form_page(
        request, LOGIN_PAGE, values={"email": ""}, notice=notice, anonymous_and_blank=notice is None
    )


async def login(request: Request) -> Response:
    svc = services(request)
    values = await read_form(request, "email", "password", "remember")
    email, password = normalise_email(values["email"]), values["password"]
    remember = values["remember"] == "1"
    errors = {}
    if not email:
        errors["email"] = "Enter your email address."
    if not password:
        errors["password"] = "Enter your password."
    if errors:
        return form_page(request, LOGIN_PAGE, values=values, errors=errors, status=422)

    ip = client_ip(request)
    user_id = await User.id_by_email(email)
    device = svc.devices.read(request)
    known = user_id is not None and svc.devices.knows(device, user_id)
    limits = svc.throttle.sign_in(
        email, client_network(ip), svc.devices.throttle_id(device) if known and device else None
    )
    # Reserved before the password is looked at: a burst gets no more checks than the limit,
    # and a throttled guess learns nothing.
    wait = await svc.throttle.reserve(limits)
    if wait:
        metrics.sign_in("throttled")
        audit("login_throttled", ip=ip, user_id=user_id, level=logging.WARNING, retry_after=wait)
        message, headers = throttled(wait)
        return form_page(request, LOGIN_PAGE, values=values, message=message, status=429, headers=headers)
    try:
        # The epoch before the document: a password change writes the new hash, then bumps the
        # epoch. So either this reads the new hash, or its session is refused or swept.
        epoch = await svc.store.epoch(user_id or NOBODY)
        user = await User.get(PydanticObjectId(user_id or NOBODY))
        # An unknown email still costs one bcrypt check: timing must not tell which emails exist.
        right = await svc.passwords.verify(password, user.password_hash if user else None)
    except BaseException:
        await _release(svc, limits)
        raise
    if not right or user is None:
        metrics.sign_in("wrong_password")
        locked = await svc.throttle.settle(limits, ok=False)
        audit("login_failure", ip=ip, user_id=user_id, level=logging.WARNING, locked_for=locked or None)
        return form_page(request, LOGIN_PAGE, values=values, message=BAD_CREDENTIALS, status=401)

    await svc.throttle.settle(limits, ok=True)
    if svc.passwords.needs_rehash(user.password_hash):
        await user.swap_password_hash(user.password_hash, await svc.passwords.hash(password))
    session = await session_of(request).load()
    if user.two_factor:
        # The password is right; the code comes next, in this session, within five minutes.
        session[PENDING] = {
            "u": str(user.id),
            "e": epoch,
            "x": int(time.time()) + PENDING_TTL,
            "k": secrets.token_urlsafe(12),  # names this sign-in's own count of wrong codes
            "r": remember,
        }
        metrics.sign_in("second_factor_pending")
        audit("login_second_factor_pending", ip=ip, user_id=str(user.id))
        return _code_step(request)
    return await _complete(
        request, session, user, epoch=epoch, event="login_success", known=known, remember=remember
    )


async def _complete(
    request: Request,
    session: Session,
    user: User,
    *,
    epoch: int,
    event: str,
    known: bool,
    remember: bool = False,
) -> Response:
    """The last step of every way in: a fresh session id, the device cookie, a new-browser notice."""
    try:
        await sign_in(request, session, user, epoch=epoch, event=event, remember=remember)
    except StaleCredentials:
        # The credentials changed while this sign-in was under way: it must start again.
        metrics.sign_in("wrong_password")
        audit(
            "login_failure",
            ip=client_ip(request),
            user_id=str(user.id),
            level=logging.WARNING,
            reason="stale",
        )
        if wants_json(request):  # a passkey's sign-in (passkeys.js shows the error)
            return json_reply({"error": BAD_CREDENTIALS}, 401)
        return form_page(request, LOGIN_PAGE, values={"email": ""}, message=BAD_CREDENTIALS, status=401)
    metrics.sign_in("ok")
    if not known and session.digest:
        await notices.new_browser(request, user, session.digest)
    response = json_reply({"location": "/"}) if wants_json(request) else redirect(request, "home")
    return _with_device(request, response, str(user.id))


# -- the second step: a code from the authenticator app, or a recovery code ------------------

PENDING = "sign_in_pending"  # session data: who typed the right password, under which epoch
PENDING_TTL = 300
MAX_WRONG_CODES = 5
WRONG_CODE = "That code is not right. Enter the code your app shows now, or a recovery code."
START_AGAIN = "Sign in again: enter your email and password."


def _code_step(request: Request, *, status: int = 200, message: str | None = None) -> Response:
    block = "code" if is_htmx(request) else None
    context = {"values": {"email": ""}, "errors": {}, "message": message, "notice": None, "step": "code"}
    return render(request, LOGIN_PAGE, context, block=block, status=status)


def _start_again(request: Request, session: Session) -> Response:
    """Back to the password: this sign-in is over (expired, or out of wrong codes)."""
    session.pop(PENDING, None)
    return form_page(request, LOGIN_PAGE, values={"email": ""}, message=START_AGAIN, status=401)


async def second_factor(request: Request) -> Response:
    svc = services(request)
    code = (await read_form(request, "code"))["code"].strip()
    session = await session_of(request).load()
    pending = session.get(PENDING)
    user = await User.get(PydanticObjectId(pending["u"])) if pending else None
    if pending is None or user is None or pending["x"] < time.time() or "k" not in pending:
        return _start_again(request, session)
    if not code:
        return _code_step(request, status=422, message=WRONG_CODE)
    device = svc.devices.read(request)
    known = svc.devices.knows(device, str(user.id))
    ip = client_ip(request)
    # MAX_WRONG_CODES checks for this sign-in, reserved before the code is looked at: a burst of
    # codes at once gets no more (a count kept in the session let each of them read "none yet").
    this_sign_in = svc.throttle.pending_sign_in(pending["k"], MAX_WRONG_CODES, PENDING_TTL)
    if await svc.throttle.reserve(this_sign_in):
        return _start_again(request, session)
    # Wrong codes count where wrong passwords do too: the account's sign-in limits from this client.
    account = svc.throttle.second_factor(
        user.email, client_network(ip), svc.devices.throttle_id(device) if known and device else None
    )
    limits = [*account, *this_sign_in]
    if wait := await svc.throttle.reserve(account):
        await _release(svc, this_sign_in)
        message, headers = throttled(wait)
        metrics.sign_in("throttled")
        return render(
            request,
            LOGIN_PAGE,
            {"values": {}, "errors": {}, "message": message, "notice": None, "step": "code"},
            block="code" if is_htmx(request) else None,
            status=429,
            headers=headers,
        )
    try:
        how = await twofactor.check_code(request, user, code)
    except BaseException:
        await _release(svc, limits)
        raise
    await svc.throttle.settle(account, ok=how is not None)
    spent = await svc.throttle.settle(this_sign_in, ok=how is not None)
    if how is None:
        metrics.sign_in("wrong_password")
        audit("second_factor_failure", ip=ip, user_id=str(user.id), level=logging.WARNING)
        if spent:  # this sign-in's last wrong code
            return _start_again(request, session)
        return _code_step(request, status=401, message=WRONG_CODE)
    del session[PENDING]
    event, remember = f"login_success_{how}", bool(pending.get("r"))
    return await _complete(
        request, session, user, epoch=pending["e"], event=event, known=known, remember=remember
    )


# -- passkeys: one step, no password, two factors in one ---------------------------------------


async def passkey_options(request: Request) -> Response:
    svc = services(request)
    session = await session_of(request).load()
    # A visitor with no session gets one, to hold the challenge: so many an hour per address.
    if session.digest is None and (
        wait := await svc.throttle.reserve(svc.throttle.passkey_options(client_network(client_ip(request))))
    ):
        message, headers = throttled(wait, "passkey requests")
        return json_reply({"error": message}, 429, headers=headers)
    try:
        options = await twofactor.sign_in_options(request, session)
    except PasskeyError as exc:
        return json_reply({"error": str(exc)}, 400)
    return Response(options, media_type="application/json", headers={"Cache-Control": "no-store"})


async def passkey(request: Request) -> Response:
    svc = services(request)
    values = await read_form(request, "credential", "remember")
    credential = values["credential"]
    session = await session_of(request).load()
    try:
        user, epoch = await twofactor.authenticate(request, session, credential, purpose="sign_in")
    except PasskeyError as exc:
        metrics.sign_in("passkey_failed")
        audit(
            "passkey_failure",
            ip=client_ip(request),
            user_id=exc.user_id,
            level=logging.WARNING,
            reason=exc.reason,
        )
        return json_reply({"error": str(exc)}, 401)
    known = svc.devices.knows(svc.devices.read(request), str(user.id))
    remember = values["remember"] == "1"
    event = "login_success_passkey"
    return await _complete(request, session, user, epoch=epoch, event=event, known=known, remember=remember)


# -- sign up --------------------------------------------------------------------------------


async def signup_page(request: Request) -> Response:
    session = await session_of(request).load()
    if session.user:
        return redirect(request, "home")
    empty = {"first_name": "", "last_name": "", "email": ""}
    min_length = services(request).passwords.min_length
    notice = take_flash(session)
    return form_page(
        request,
        SIGNUP_PAGE,
        values=empty,
        notice=notice,
        min_length=min_length,
        anonymous_and_blank=notice is None,
    )


async def signup(request: Request) -> Response:
    svc = services(request)
    values = await read_form(request, "first_name", "last_name", "email", "password")
    first, last = values["first_name"].strip(), values["last_name"].strip()
    email, password = normalise_email(values["email"]), values["password"]
    problems = {
        "first_name": text_problem(first, "first name", NAME_MAX),
        "last_name": text_problem(last, "last name", NAME_MAX),
        "email": email_problem(email),
        "password": svc.passwords.problem(password, email=email) if password else "Choose a password.",
    }
    errors = {field: message for field, message in problems.items() if message}
    min_length = svc.passwords.min_length

    page = page_of(request, SIGNUP_PAGE, values=values, min_length=min_length)

    if errors:
        return page(422, errors=errors)
    ip = client_ip(request)

    def too_many(wait: int) -> Response:
        audit("signup_throttled", ip=ip, level=logging.WARNING, retry_after=wait)
        message, headers = throttled(wait, "sign-ups")
        return page(429, message=message, headers=headers)

    if wait := await svc.throttle.reserve(svc.throttle.sign_up(client_network(ip))):
        return too_many(wait)
    taken = {"email": "An account with this email already exists. Sign in instead?"}
    # Checked before hashing: a taken address costs no bcrypt work (the 409 tells it anyway).
    if await User.id_by_email(email):
        if wait := await svc.throttle.reserve(svc.throttle.taken_address(email)):
            return too_many(wait)
        return page(409, errors=taken)
    user = User(
        first_name=first, last_name=last, email=email, password_hash=await svc.passwords.hash(password)
    )
    try:
        await user.insert()
    except DuplicateKeyError:
        # The unique index decides, so concurrent signups with one address make one account.
        return page(409, errors=taken)
    session = await session_of(request).load()
    await sign_in(request, session, user, epoch=0, event="signup")
    # Sign-up counts as the first sign-in on this browser: no new-browser notice, a link instead.
    if wait := await notices.link_allowed(request, user, user.email):
        minutes = -(-wait // 60)
        notice = NOT_MAILED.format(minutes=minutes, s="s" if minutes != 1 else "")
        return _with_device(request, done(request, session, notice, "home"), str(user.id))
    await notices.verify_email(request, user, user.email)
    return _with_device(request, redirect(request, "home"), str(user.id))


# -- sign out -------------------------------------------------------------------------------


@signed_in
async def logout_page(request: Request, me: SignedIn) -> Response:
    return render(request, "pages/logout.html")


async def logout(request: Request) -> Response:
    svc = services(request)
    session = await session_of(request).load(touch=False)
    if session.user:
        audit("logout", ip=client_ip(request), user_id=session.user.id, session=handle(svc, session))
        metrics.session_ended("sign_out")
    await session.destroy()
    # Chrome's back/forward cache may keep the private page despite no-store: drop it too.
    clear = {"Clear-Site-Data": '"cache"'}
    if not is_htmx(request):
        response = redirect(request, "login")
        response.headers.update(clear)
        return response
    # Swap the sign-in form into the page and the navbar out of band: no reload.
    return render(
        request,
        LOGIN_PAGE,
        {"values": {"email": ""}, "errors": {}, "message": None, "notice": None},
        block="content",
        oob=("navbar",),
        headers={"HX-Push-Url": path_for(request, "login"), **clear},
    )
