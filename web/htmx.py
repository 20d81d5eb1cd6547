"""The few htmx helpers, in one place."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from web.urls import path_for


def is_htmx(request: Request) -> bool:
    """An htmx request that wants a fragment: not a boosted navigation, not a history restore."""
    headers = request.headers
    return (
        headers.get("hx-request") == "true"
        and headers.get("hx-boosted") != "true"
        and headers.get("hx-history-restore-request") != "true"
    )


def json_reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON answer, never stored by a cache: they speak of one visitor's session and account."""
    return JSONResponse(body, status, headers={"Cache-Control": "no-store", **(headers or {})})


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def redirect(request: Request, route: str, /, *, query: str = "", **params: Any) -> Response:
    """Go to a named route: 303 for a plain form or link; 200 + HX-Redirect for htmx.

    htmx ignores headers on a 3xx, so it gets a 200 that tells it where to go.
    """
    return redirect_to(request, path_for(request, route, **params) + (f"?{query}" if query else ""))


def redirect_to(request: Request, path: str) -> Response:
    """As redirect(), to a local path already checked by the caller (e.g. a `next` parameter)."""
    if request.headers.get("hx-request") == "true":
        response = Response(status_code=200, headers={"HX-Redirect": path})
    else:
        response = RedirectResponse(path, status_code=303)
    response.headers["Cache-Control"] = "no-store"
    response.headers.add_vary_header("HX-Request")
    return response
