"""Failures become pages: outages 503, bugs 500, HTTP errors their own status. Never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping

from pymongo.errors import ConnectionFailure, OperationFailure
from redis import exceptions as redis_errors
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


class ErrorMiddleware:
    """Turn any exception that escapes the app into a page, logging it once."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        def watch(message: Message) -> Awaitable[None]:  # send's own awaitable: no coroutine
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            return send(message)

        try:
            await self.app(scope, receive, watch)
        except ClientDisconnect:
            # The client went away before its body was in (a phone losing signal, or someone
            # holding connections open): nobody to answer, nothing broken, nothing to alert on.
            log.info("client went away during %s %r", scope["method"], scope["path"])
            scope[metrics.CLIENT_GONE] = True  # counted as 499
        except Busy:
            # Too many passwords waiting for bcrypt: say so at once rather than queue for seconds.
            log.warning("password queue full during %s %r", scope["method"], scope["path"])
            if started:
                raise
            busy = error_page(
                Request(scope),
                503,
                "Too many people are signing in right now. Try again in a moment.",
                {"Retry-After": str(BUSY_RETRY_AFTER)},
            )
            await busy(scope, receive, send)
        except Exception as exc:
            service = outage(exc)
            if service:
                metrics.service_error(service)
                # Expected during an outage: one line, no traceback.
                log.warning("%s unavailable during %s %r: %r", service, scope["method"], scope["path"], exc)
            else:
                # %r: a path with a newline in it must not forge a log line.
                log.exception("unhandled error during %s %r", scope["method"], scope["path"])
            if started:
                raise  # too late for a page; let the server drop the connection
            request = Request(scope)
            if service:
                response = error_page(
                    request,
                    503,
                    "The service is briefly unavailable. Nothing was lost; try again in a few seconds.",
                    {"Retry-After": str(RETRY_AFTER)},
                )
            else:
                response = error_page(request, 500, "An unexpected error happened. It has been logged.")
            await response(scope, receive, send)
