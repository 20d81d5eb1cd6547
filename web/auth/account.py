"""The account pages: change password (ending every other session) and change name."""

from __future__ import annotations

import logging

from beanie import PydanticObjectId
from bson.errors import InvalidId
from starlette.requests import Request
from starlette.responses import Response

from web.audit import audit
from web.auth.users import User
from web.auth.views import NAME_MAX, client_ip, form_page, signed_in, text_problem, throttled
from web.forms import read_form
from web.htmx import is_htmx, redirect
from web.services import services

PAGE = "pages/password.html"
FLASH = "flash"
CHANGED = "Your password was changed, and every other session was signed out."


async def _current_user(request: Request) -> User | None:
    session = await signed_in(request)
    if not session.user:
        return None
    try:
        user = await User.get(PydanticObjectId(session.user.id))
    except InvalidId:
        user = None
    if user is None:
        await session.destroy()  # the account is gone; so is its session
    return user


async def password_page(request: Request) -> Response:
    if await _current_user(request) is None:
        return redirect(request, "/login")
    # A no-JS change ends in a redirect here; the message rode along in the session.
    notice = (await signed_in(request)).pop(FLASH)
    return form_page(
        request, PAGE, values={}, notice=notice, min_length=services(request).passwords.min_length
    )


async def change_password(request: Request) -> Response:
    svc = services(request)
    user = await _current_user(request)
    if user is None:
        return redirect(request, "/login")
    session = await signed_in(request)
    values = await read_form(request, "current_password", "new_password")
    current, new = values["current_password"], values["new_password"]

    def page(
        status: int = 200,
        errors: dict[str, str] | None = None,
        notice: str | None = None,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        return form_page(
            request,
            PAGE,
            values={},
            errors=errors,
            notice=notice,
            message=message,
            status=status,
            headers=headers,
            min_length=svc.passwords.min_length,
        )

    errors = {}
    if not current:
        errors["current_password"] = "Enter your current password."
    if not new:
        errors["new_password"] = "Choose a new password."
    elif problem := svc.passwords.problem(new, email=user.email):
        errors["new_password"] = problem
    elif new == current:
        errors["new_password"] = "Choose a password different from the current one."
    if errors:
        return page(422, errors)

    ip = client_ip(request)
    wait = await svc.throttle.retry_after(user.email, ip)
    if wait:
        message, headers = throttled(wait)
        audit("login_throttled", ip=ip, user_id=str(user.id), level=logging.WARNING, retry_after=wait)
        return page(429, message=message, headers=headers)
    if not await svc.passwords.verify(current, user.password_hash):
        await svc.throttle.failed(user.email, ip)
        audit("password_change_failure", ip=ip, user_id=str(user.id), level=logging.WARNING)
        wrong = {"current_password": "That is not your current password."}
        return page(401, wrong)

    user.password_hash = await svc.passwords.hash(new)
    await user.save()
    await svc.throttle.succeeded(user.email)
    # Whoever knew the old password may hold a session: end them all but this one, which
    # gets a new id too.
    others = [d for d in await svc.store.user_sessions(str(user.id)) if d != session.digest]
    for digest in others:
        await svc.store.delete(digest, str(user.id))
    await session.cycle()
    handle = svc.signer.handle(session.digest) if session.digest else None
    audit("password_changed", ip=ip, user_id=str(user.id), session=handle, sessions_ended=len(others))
    if is_htmx(request):
        return page(notice=CHANGED)
    session[FLASH] = CHANGED
    return redirect(request, str(request.url_for("password").path))


# -- profile: the name, which every session of the user carries for the navbar -------------

PROFILE = "pages/profile.html"
RENAMED = "Your name was changed on every device."


async def profile_page(request: Request) -> Response:
    user = await _current_user(request)
    if user is None:
        return redirect(request, "/login")
    notice = (await signed_in(request)).pop(FLASH)
    values = {"first_name": user.first_name, "last_name": user.last_name}
    return form_page(request, PROFILE, values=values, notice=notice)


async def change_profile(request: Request) -> Response:
    user = await _current_user(request)
    if user is None:
        return redirect(request, "/login")
    values = await read_form(request, "first_name", "last_name")
    first, last = values["first_name"].strip(), values["last_name"].strip()
    problems = {
        "first_name": text_problem(first, "first name", NAME_MAX),
        "last_name": text_problem(last, "last name", NAME_MAX),
    }
    errors = {field: message for field, message in problems.items() if message}
    if errors:
        return form_page(request, PROFILE, values=values, errors=errors, notice=None, status=422)
    user.first_name, user.last_name = first, last
    await user.save()
    session = await signed_in(request)
    await session.rename(user.display_name)
    audit("profile_changed", ip=client_ip(request), user_id=str(user.id))
    if is_htmx(request):
        # The navbar shows the name too: swap it out of band.
        return form_page(request, PROFILE, values=values, notice=RENAMED, oob=("partials/navbar.html",))
    session[FLASH] = RENAMED
    return redirect(request, str(request.url_for("profile").path))
