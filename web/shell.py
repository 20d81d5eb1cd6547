"""The shell: the one ASGI layer around the app for what every request needs, whatever it is.

In order: time and count it (metrics), work out the real client and refuse cross-site forms and
oversized bodies (security), turn any exception into a page (errors), and add the security
headers to whatever answers. These were three middlewares (under Starlette's own error layer,
now gone: web/app.py), each with its own frame and its own wrapper around `send` on every request.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from web.errors import error_page, failure_page, report
from web.metrics import RequestMetrics
from web.security import Security, limited


class Shell:
    def __init__(self, app: ASGIApp, *, security: Security, metrics: RequestMetrics | None = None) -> None:
        self.app = app
        self.security = security
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server sends if the app ends without a response
        answered = False  # a response has begun: too late for an error page
        gone = False  # the client left before it was answered: a 499, not a server error
        add_headers = self.security.add_headers

        # Not async: handing back send's own awaitable spares a coroutine per message.
        def respond(message: Message) -> Awaitable[None]:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
                add_headers(message)
            return send(message)

        try:
            refusal, unbounded = self.security.admit(scope)
            if refusal is not None:
                await error_page(Request(scope), *refusal)(scope, receive, respond)
            else:
                await self.app(scope, limited(receive) if unbounded else receive, respond)
        except Exception as exc:
            if not report(exc, scope):
                gone = True
            elif answered:
                status = 500  # even after a 200 began: the client got a broken response
                raise  # too late for a page; let the server drop the connection
            else:
                await failure_page(exc, Request(scope))(scope, receive, respond)
        finally:
            if self.metrics is not None:
                self.metrics.record(scope, 499 if gone else status, time.perf_counter() - started)
