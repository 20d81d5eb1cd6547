"""The account pages: change password (ending every other session) and change name."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from web import deletion, notices
from web.accounts import check_password, current_user, end_sessions, handle
from web.audit import audit
from web.auth.users import normalise_email
from web.forms import NAME_MAX, done, form_page, page_of, read_form, take_flash, text_problem, throttled
from web.guard import SignedIn, SignedOut, signed_in
from web.security import client_ip
from web.services import services
from web.sessions import Session, StaleCredentials

PAGE = "pages/password.html"
CHANGED = "Your password was changed, and every other session was signed out."
RACED = (
    "Your account changed while this was being done (this form sent twice, a reset, or a sign-out "
    "everywhere), so this request was not applied."
)
NOT_DELETED = "Your account changed while this was being done, so it was not deleted. Try again."


@signed_in
async def password_page(request: Request, me: SignedIn) -> Response:
    await current_user(me)
    return form_page(
        request,
        PAGE,
        values={},
        notice=take_flash(me.session),
        min_length=services(request).passwords.min_length,
    )


@signed_in(recent=True)
async def change_password(request: Request, me: SignedIn) -> Response:
    svc = services(request)
    version = await svc.store.version(me.user.id)  # before the document and the check
    user = await current_user(me)
    values = await read_form(request, "current_password", "new_password")
    current, new = values["current_password"], values["new_password"]

    page = page_of(request, PAGE, values={}, min_length=svc.passwords.min_length)

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

    user_id = str(user.id)
    checked = await check_password(request, user, current, event="password_change_failure")
    if checked is False:
        return page(401, {"current_password": "That is not your current password."})
    if checked is not True:
        message, headers = throttled(checked)
        return page(429, message=message, headers=headers)
    new_hash = await svc.passwords.hash(new)

    # Claimed before anything is written: a reset, another change, anything that ended
    # sessions or changed credentials since the check (revoke-others, "this wasn't me", a
    # deletion), or the end of this very session wins, and this changes nothing.
    claimed = await svc.store.claim(user_id, version, session=me.session.digest)
    if claimed is None:
        return page(409, message=RACED)
    # The new hash first, then the epoch again: a sign-in reads them in the other order
    # (views/auth.py), so one that read the old hash cannot complete after the sweep below.
    await user.set_fields(password_hash=new_hash)
    try:
        # A new id, only if this session is still alive (one revoked meanwhile stays dead) and
        # nothing has bumped the epoch since the claim.
        await me.session.cycle(epoch=claimed)
        keep: Session | None = me.session
    except StaleCredentials:
        keep = None
    # Whoever knew the old password may hold a session, or be signing in right now: end them
    # all but this one.
    await end_sessions(request, user_id, keep=keep, reason="password_changed", bump_epoch=True)
    if keep is None:
        await me.session.destroy()
        raise SignedOut
    await notices.password_changed(request, user, how="changed")
    audit("password_changed", ip=client_ip(request), user_id=user_id, session=handle(svc, me.session))
    return done(request, me.session, CHANGED, "password", page(notice=CHANGED))


# -- profile: the name, which every session of the user carries for the navbar -------------

PROFILE = "pages/profile.html"
RENAMED = "Your name was changed on every device."


@signed_in
async def profile_page(request: Request, me: SignedIn) -> Response:
    user = await current_user(me)
    values = {"first_name": user.first_name, "last_name": user.last_name}
    return form_page(request, PROFILE, values=values, notice=take_flash(me.session))


@signed_in
async def change_profile(request: Request, me: SignedIn) -> Response:
    user = await current_user(me)
    values = await read_form(request, "first_name", "last_name")
    first, last = values["first_name"].strip(), values["last_name"].strip()
    problems = {
        "first_name": text_problem(first, "first name", NAME_MAX),
        "last_name": text_problem(last, "last name", NAME_MAX),
    }
    errors = {field: message for field, message in problems.items() if message}
    if errors:
        return form_page(request, PROFILE, values=values, errors=errors, status=422)
    await user.set_fields(first_name=first, last_name=last)
    await me.session.rename(user.display_name)
    audit("profile_changed", ip=client_ip(request), user_id=str(user.id))
    # The navbar shows the name too: htmx swaps it out of band.
    fragment = form_page(request, PROFILE, values=values, notice=RENAMED, oob=("navbar",))
    return done(request, me.session, RENAMED, "profile", fragment)


# -- leaving: delete the account and everything that names it (web/deletion.py) -----------

DELETE_PAGE = "pages/delete.html"
DELETED = "Your account was deleted, with everything it held. You can sign up again at any time."


@signed_in
async def delete_page(request: Request, me: SignedIn) -> Response:
    user = await current_user(me)
    return form_page(request, DELETE_PAGE, values={"confirm": ""}, email=user.email)


@signed_in(recent=True)
async def delete_account(request: Request, me: SignedIn) -> Response:
    version = await services(request).store.version(me.user.id)  # before the document
    user = await current_user(me)
    confirm = normalise_email((await read_form(request, "confirm"))["confirm"])
    if confirm != user.email:
        errors = {"confirm": "Type the email address of this account to confirm."}
        values = {"confirm": confirm}
        return form_page(request, DELETE_PAGE, values=values, errors=errors, status=422, email=user.email)
    if not await deletion.delete_account(request, me.session, user, version=version):
        return form_page(
            request, DELETE_PAGE, values={"confirm": ""}, message=NOT_DELETED, status=409, email=user.email
        )
    response = done(request, me.session, DELETED, "signup")
    response.headers["Clear-Site-Data"] = '"cache"'
    return response
