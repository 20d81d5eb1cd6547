"""Failures become pages: outages 503, bugs 500, HTTP errors their own status. Never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from pymongo.errors import ConnectionFailure, OperationFailure
from redis import exceptions as redis_errors
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from web import metrics
from web.auth.passwords import Busy
from web.htmx import is_htmx
from web.templating import TITLES, render

log = logging.getLogger("web")

RETRY_AFTER = 5  # seconds; what a 503 tells browsers and clients to wait
BUSY_RETRY_AFTER = 2
REDIS_DOWN = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    redis_errors.ReadOnlyError,
    redis_errors.SlotNotCoveredError,
)
MONGO_DOWN = (ConnectionFailure,)


class LinkGone(HTTPException):
    """A link from a mail that no longer works (used, expired, voided): 410, and where to ask again."""

    def __init__(self, message: str, *, again: str) -> None:
        super().__init__(410, message)
        self.again = again


def error_page(
    request: Request,
    status: int,
    message: str,
    headers: Mapping[str, str] | None = None,
    again: str | None = None,
) -> Response:
    """The error page; for htmx, just the alert, retargeted to the page's alert area."""
    context = {"status": status, "title": TITLES.get(status, "Error"), "message": message, "again": again}
    if is_htmx(request):
        hx = {"HX-Retarget": "#alerts", "HX-Reswap": "innerHTML", **(headers or {})}
        return render(request, "pages/error.html", context, block="alert", status=status, headers=hx)
    return render(request, "pages/error.html", context, status=status, headers=headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code < 400:
        return Response(status_code=exc.status_code, headers=exc.headers)
    message = exc.detail if exc.detail != TITLES.get(exc.status_code) else ""
    if exc.status_code == 404:
        message = "There is nothing at this address."
    elif exc.status_code == 405:
        message = "This address does not take that kind of request."
    return error_page(request, exc.status_code, message, exc.headers, getattr(exc, "again", None))


def outage(exc: BaseException) -> metrics.Service | None:
    """Which service an exception says is down, if it is an outage at all."""
    if isinstance(exc, REDIS_DOWN):
        return "redis"
    if isinstance(exc, MONGO_DOWN) or (isinstance(exc, OperationFailure) and exc.timeout):
        return "mongodb"
    return None


def report(exc: Exception, scope: Scope) -> bool:
    """Log an exception that escaped the app, once; False if it says the client went away."""
    method, path = scope["method"], scope["path"]
    if isinstance(exc, ClientDisconnect):
        # The client went away before its body was in (a phone losing signal, or someone
        # holding connections open): nobody to answer, nothing broken, nothing to alert on.
        log.info("client went away during %s %r", method, path)
        return False
    if isinstance(exc, Busy):
        log.warning("password queue full during %s %r", method, path)
        return True
    service = outage(exc)
    if service:
        metrics.service_error(service)
        # Expected during an outage: one line, no traceback.
        log.warning("%s unavailable during %s %r: %r", service, method, path, exc)
    else:
        # %r: a path with a newline in it must not forge a log line.
        log.error("unhandled error during %s %r", method, path, exc_info=exc)
    return True


def failure_page(exc: Exception, request: Request) -> Response:
    """The page for an exception that escaped the app: outages 503, a full bcrypt queue 503, bugs 500."""
    if isinstance(exc, Busy):
        # Too many passwords waiting for bcrypt: say so at once rather than queue for seconds.
        message = "Too many people are signing in right now. Try again in a moment."
        return error_page(request, 503, message, {"Retry-After": str(BUSY_RETRY_AFTER)})
    if outage(exc):
        message = "The service is briefly unavailable. Nothing was lost; try again in a few seconds."
        return error_page(request, 503, message, {"Retry-After": str(RETRY_AFTER)})
    return error_page(request, 500, "An unexpected error happened. It has been logged.")


class HttpErrors:
    """A handler's HTTPException becomes its error page (http_error), inside the session layer,
    so that the page still sets or clears the session cookie as the request left it.

    What Starlette's ExceptionMiddleware does for the app's one handler, without its wrapper
    around `send` and its Request on every request: nothing runs here unless an exception comes
    up. One that comes after the response began gets no page: the server refuses a second
    start, and that error goes up to the shell, which drops the connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except HTTPException as exc:
            if scope["type"] != "http":
                raise
            response = await http_error(Request(scope, receive), exc)
            exc.__traceback__ = None  # an instance raised again would keep every old traceback
            await response(scope, receive, send)
