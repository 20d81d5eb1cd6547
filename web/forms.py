"""Forms: reading posts strictly, validating text, and rendering a form page or its fragment."""

from __future__ import annotations

import unicodedata
from typing import Any, Protocol

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from web.htmx import is_htmx, redirect
from web.mail.message import is_plain_address
from web.sessions import Session
from web.templating import render

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FIELD = 64 * 1024
NAME_MAX = 100
EMAIL_MAX = 254
FLASH = "flash"


async def read_form(request: Request, *names: str) -> dict[str, str]:
    """The named fields as strings ("" when absent). Anything else is a 4xx, never a query operator.

    Only urlencoded bodies are accepted: it is all a browser form or htmx sends here, and
    refusing multipart spares the app a whole parser's worth of attack surface.
    """
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != FORM_TYPE:
        raise HTTPException(415, "Send this form as application/x-www-form-urlencoded.")
    # The whole body first: one over the limit is a 413 however it was sent, chunked included,
    # before the parser's own per-field limit can call it something else.
    await request.body()
    try:
        form = await request.form(max_fields=50, max_part_size=MAX_FIELD)
    except HTTPException as exc:
        if "maximum size" in str(exc.detail):
            raise HTTPException(413, "That request was too large.") from None
        raise
    values: dict[str, str] = {}
    for name in names:
        items = form.getlist(name)
        if len(items) > 1 or any(isinstance(item, UploadFile) for item in items):
            raise HTTPException(422, f"The field {name!r} must be sent once, as plain text.")
        values[name] = str(items[0]) if items else ""
    return values


def text_problem(value: str, what: str, limit: int) -> str | None:
    """What is wrong with a required line of text, or None."""
    if not value:
        return f"Enter your {what}."
    if len(value) > limit:
        return f"Use at most {limit} characters."
    if any(_unusable(ch) for ch in value):
        return f"Your {what} contains characters that can't be used."
    if not any(unicodedata.category(ch)[0] in "LNPS" for ch in value):
        return f"Your {what} needs at least one letter, digit or sign."
    return None


# Joiners shape scripts and emoji, and direction marks (not overrides) come from Persian and
# Hebrew keyboards: the invisible characters that names need.
KEPT_FORMATS = frozenset("\u200c\u200d\u200e\u200f")
# Letters and symbols that show as nothing (Hangul fillers, the Braille blank).
BLANKS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def _unusable(ch: str) -> bool:
    """Control, surrogate and private characters, line breaks, blanks, and invisible formatting
    other than the kept kinds: direction overrides would reorder what a page or mail shows, and
    zero-width or blank characters make a name that looks empty or like another one."""
    category = unicodedata.category(ch)
    return (
        category in ("Cc", "Cs", "Co", "Zl", "Zp")
        or (category == "Cf" and ch not in KEPT_FORMATS)
        or ch in BLANKS
    )


def email_problem(email: str) -> str | None:
    """What is wrong with an (already normalised) email address, or None."""
    return text_problem(email, "email address", EMAIL_MAX) or (
        None if is_plain_address(email) else "Enter an email address like name@example.com."
    )


def throttled(wait: int, what: str = "attempts") -> tuple[str, dict[str, str]]:
    """The message and headers of a 429, for a wait in seconds."""
    minutes = -(-wait // 60)
    message = f"Too many {what}. Try again in {minutes} minute{'s' if minutes != 1 else ''}."
    return message, {"Retry-After": str(wait)}


def form_page(
    request: Request,
    template: str,
    *,
    values: dict[str, str],
    errors: dict[str, str] | None = None,
    message: str | None = None,
    notice: str | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
    oob: tuple[str, ...] = (),
    anonymous_and_blank: bool = False,
    **extra: Any,
) -> Response:
    """A form page, or just its form (and any `oob` partials) for htmx; never a password.
    anonymous_and_blank: see render()."""
    values = {k: v for k, v in values.items() if "password" not in k}
    context = {"values": values, "errors": errors or {}, "message": message, "notice": notice, **extra}
    block = "form" if is_htmx(request) else None
    return render(
        request,
        template,
        context,
        block=block,
        oob=oob,
        status=status,
        headers=headers,
        anonymous_and_blank=anonymous_and_blank,
    )


class FormPage(Protocol):
    def __call__(
        self,
        status: int = 200,
        errors: dict[str, str] | None = None,
        message: str | None = None,
        notice: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response: ...


def page_of(request: Request, template: str, *, values: dict[str, str], **extra: Any) -> FormPage:
    """form_page() bound to one request, template and context: `page(422, errors=...)`."""

    def page(
        status: int = 200,
        errors: dict[str, str] | None = None,
        message: str | None = None,
        notice: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        return form_page(
            request,
            template,
            values=values,
            errors=errors,
            message=message,
            notice=notice,
            status=status,
            headers=headers,
            **extra,
        )

    return page


def done(
    request: Request, session: Session, notice: str, route: str, fragment: Response | None = None
) -> Response:
    """After a successful post: htmx gets `fragment` in place; a plain form, the notice and a 303."""
    if fragment is not None and is_htmx(request):
        return fragment
    session[FLASH] = notice
    return redirect(request, route)


def take_flash(session: Session) -> str | None:
    """The notice a plain post left for the page it redirected to."""
    notice: str | None = session.pop(FLASH)
    return notice
