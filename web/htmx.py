"""The few htmx helpers, in one place."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response


def is_htmx(request: Request) -> bool:
    """An htmx request that wants a fragment: not a boosted navigation, not a history restore."""
    headers = request.headers
    return (
        headers.get("hx-request") == "true"
        and headers.get("hx-boosted") != "true"
        and headers.get("hx-history-restore-request") != "true"
    )


def redirect(request: Request, url: str) -> Response:
    """303 for a plain form or link; 200 + HX-Redirect for htmx, which ignores headers on a 3xx."""
    if request.headers.get("hx-request") == "true":
        response = Response(status_code=200, headers={"HX-Redirect": url})
    else:
        response = RedirectResponse(url, status_code=303)
    response.headers["Cache-Control"] = "no-store"
    response.headers.add_vary_header("HX-Request")
    return response
