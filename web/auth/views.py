"""Sign up, sign in, sign out."""

from __future__ import annotations

import logging
import re
import unicodedata
from typing import Any

from pymongo.errors import DuplicateKeyError
from starlette.requests import Request
from starlette.responses import Response

from web.audit import audit
from web.auth.users import User, normalise_email
from web.forms import read_form
from web.htmx import is_htmx, redirect
from web.services import Services, services
from web.sessions import Session, SessionUser, session_of
from web.sessions.agent import browser_label
from web.templating import render

NAME_MAX = 100
EMAIL_MAX = 254
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
BAD_CREDENTIALS = "Invalid email or password"
LOGIN_PAGE = "pages/login.html"
SIGNUP_PAGE = "pages/signup.html"


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def form_page(
    request: Request,
    template: str,
    *,
    values: dict[str, str],
    errors: dict[str, str] | None = None,
    message: str | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
    oob: tuple[str, ...] = (),
    **extra: Any,
) -> Response:
    """A form page, or just its form (and any `oob` partials) for htmx; never a password."""
    values = {k: v for k, v in values.items() if "password" not in k}
    context = {"values": values, "errors": errors or {}, "message": message, **extra}
    if is_htmx(request):
        return render(request, template, context, block="form", oob=oob, status=status, headers=headers)
    return render(request, template, context, status=status, headers=headers)


async def signed_in(request: Request, *, touch: bool = True) -> Session:
    return await session_of(request).load(touch=touch)


async def start_session(request: Request, user: User, event: str) -> Response:
    """Sign the user in on a fresh session id, and send them home."""
    svc = services(request)
    session = await signed_in(request)
    agent = browser_label(request.headers.get("user-agent", ""))
    await session.login(SessionUser(str(user.id), user.display_name), ip=client_ip(request), agent=agent)
    audit(event, ip=client_ip(request), user_id=str(user.id), session=_handle(svc, session))
    return redirect(request, str(request.url_for("home").path))


def _handle(svc: Services, session: Session) -> str | None:
    return svc.signer.handle(session.digest) if session.digest else None


# -- sign in --------------------------------------------------------------------------------


async def login_page(request: Request) -> Response:
    if (await signed_in(request)).user:
        return redirect(request, "/")
    return form_page(request, LOGIN_PAGE, values={"email": ""})


async def login(request: Request) -> Response:
    svc = services(request)
    values = await read_form(request, "email", "password")
    email, password = normalise_email(values["email"]), values["password"]
    errors = {}
    if not email:
        errors["email"] = "Enter your email address."
    if not password:
        errors["password"] = "Enter your password."
    if errors:
        return form_page(request, LOGIN_PAGE, values=values, errors=errors, status=422)

    ip = client_ip(request)
    wait = await svc.throttle.retry_after(email, ip)
    if wait:
        # Decided before the password is looked at, so a throttled guess learns nothing.
        audit("login_throttled", ip=ip, level=logging.WARNING, retry_after=wait)
        message, headers = throttled(wait)
        return form_page(request, LOGIN_PAGE, values=values, message=message, status=429, headers=headers)

    user = await User.by_email(email)
    # An unknown email still costs one bcrypt check: timing must not tell which emails exist.
    if not await svc.passwords.verify(password, user.password_hash if user else None):
        locked = await svc.throttle.failed(email, ip)
        audit(
            "login_failure",
            ip=ip,
            user_id=str(user.id) if user else None,
            level=logging.WARNING,
            locked_for=locked or None,
        )
        return form_page(request, LOGIN_PAGE, values=values, message=BAD_CREDENTIALS, status=401)

    assert user is not None
    await svc.throttle.succeeded(email)
    if svc.passwords.needs_rehash(user.password_hash):
        user.password_hash = await svc.passwords.hash(password)
        await user.save()
    return await start_session(request, user, "login_success")


def throttled(wait: int) -> tuple[str, dict[str, str]]:
    """The message and headers of a 429, for a wait in seconds."""
    minutes = -(-wait // 60)
    message = f"Too many attempts. Try again in {minutes} minute{'s' if minutes != 1 else ''}."
    return message, {"Retry-After": str(wait)}


# -- sign up --------------------------------------------------------------------------------


def text_problem(value: str, what: str, limit: int) -> str | None:
    if not value:
        return f"Enter your {what}."
    if len(value) > limit:
        return f"Use at most {limit} characters."
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        return f"Your {what} contains characters that can't be used."
    return None


async def signup_page(request: Request) -> Response:
    if (await signed_in(request)).user:
        return redirect(request, "/")
    empty = {"first_name": "", "last_name": "", "email": ""}
    return form_page(request, SIGNUP_PAGE, values=empty, min_length=services(request).passwords.min_length)


async def signup(request: Request) -> Response:
    svc = services(request)
    values = await read_form(request, "first_name", "last_name", "email", "password")
    first, last = values["first_name"].strip(), values["last_name"].strip()
    email, password = normalise_email(values["email"]), values["password"]
    problems = {
        "first_name": text_problem(first, "first name", NAME_MAX),
        "last_name": text_problem(last, "last name", NAME_MAX),
        "email": text_problem(email, "email address", EMAIL_MAX)
        or (None if _EMAIL.fullmatch(email) else "Enter an email address like name@example.com."),
        "password": svc.passwords.problem(password, email=email) if password else "Choose a password.",
    }
    errors = {field: message for field, message in problems.items() if message}
    min_length = svc.passwords.min_length
    if errors:
        return form_page(
            request, SIGNUP_PAGE, values=values, errors=errors, status=422, min_length=min_length
        )

    user = User(
        first_name=first, last_name=last, email=email, password_hash=await svc.passwords.hash(password)
    )
    try:
        await user.insert()
    except DuplicateKeyError:
        # The unique index decides, so concurrent signups with one address make one account.
        taken = {"email": "An account with this email already exists. Sign in instead?"}
        return form_page(request, SIGNUP_PAGE, values=values, errors=taken, status=409, min_length=min_length)
    return await start_session(request, user, "signup")


# -- sign out -------------------------------------------------------------------------------


async def logout_page(request: Request) -> Response:
    if not (await signed_in(request)).user:
        return redirect(request, "/login")
    return render(request, "pages/logout.html")


async def logout(request: Request) -> Response:
    svc = services(request)
    session = await signed_in(request, touch=False)
    if session.user:
        audit("logout", ip=client_ip(request), user_id=session.user.id, session=_handle(svc, session))
    await session.destroy()
    # Chrome's back/forward cache may keep the private page despite no-store: drop it too.
    clear = {"Clear-Site-Data": '"cache"'}
    if not is_htmx(request):
        response = redirect(request, "/login")
        response.headers.update(clear)
        return response
    # Swap the sign-in form into the page and the navbar out of band: no reload.
    return render(
        request,
        LOGIN_PAGE,
        {"values": {"email": ""}, "errors": {}, "message": None},
        block="content",
        oob=("partials/navbar.html",),
        headers={"HX-Push-Url": "/login", **clear},
    )
