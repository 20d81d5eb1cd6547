"""Reading form posts strictly: plain strings only, each field at most once."""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

FORM_TYPE = "application/x-www-form-urlencoded"


async def read_form(request: Request, *names: str) -> dict[str, str]:
    """The named fields as strings ("" when absent). Anything else is a 4xx, never a query operator.

    Only urlencoded bodies are accepted: it is all a browser form or htmx sends here, and
    refusing multipart spares the app a whole parser's worth of attack surface.
    """
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != FORM_TYPE:
        raise HTTPException(415, "Send this form as application/x-www-form-urlencoded.")
    form = await request.form(max_fields=50, max_part_size=64 * 1024)
    values: dict[str, str] = {}
    for name in names:
        items = form.getlist(name)
        if len(items) > 1 or any(isinstance(item, UploadFile) for item in items):
            raise HTTPException(422, f"The field {name!r} must be sent once, as plain text.")
        values[name] = str(items[0]) if items else ""
    return values
