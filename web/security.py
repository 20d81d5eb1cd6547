"""The outer shell of every request: client address, cross-origin check, body limit, headers."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from web.settings import Network

MAX_BODY = 1024 * 1024
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

HEADERS = {
    # script-src 'self': no inline script and no on*= handlers anywhere, so injected markup cannot run.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}


def client_ip(peer: str, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The client's address: the peer, or the last X-Forwarded-For hop that no trusted proxy added."""

    def is_trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in trusted)

    if not forwarded_for or not is_trusted(peer):
        return peer
    nearest = peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return nearest  # garbage: believe only what our own proxies vouched for
        if not is_trusted(hop):
            return hop
        nearest = hop
    return nearest


def is_cross_origin(scope: Scope) -> bool:
    """Whether a state-changing request comes from another site (a CSRF attempt)."""
    if scope["method"] in SAFE_METHODS:
        return False
    headers = Headers(scope=scope)
    # Every current browser sends Sec-Fetch-Site; "none" means the user typed or bookmarked it.
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = headers.get("origin")
    if origin is None:
        return False  # not from a browser form; the SameSite=Lax cookie covers old browsers
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:  # "http://[": not an origin any page of ours would send
        return True
    return netloc.lower() != headers.get("host", "").lower()


class SecurityMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        trusted_proxies: tuple[Network, ...],
        refuse: Callable[[Request, int, str], Response],
    ) -> None:
        self.app = app
        self.trusted_proxies = trusted_proxies
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if scope.get("client"):
            peer, port = scope["client"]
            forwarded = ",".join(headers.getlist("x-forwarded-for")) or None
            scope["client"] = (client_ip(peer, forwarded, self.trusted_proxies), port)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    out.setdefault(name, value)
            await send(message)

        if is_cross_origin(scope):
            response = self.refuse(
                Request(scope), 403, "This form was sent from another site, so it was refused."
            )
            await response(scope, receive, send_with_headers)
            return
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY:
            response = self.refuse(Request(scope), 413, "That request was too large.")
            await response(scope, receive, send_with_headers)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY:  # a chunked body that lied by omission
                    raise HTTPException(413, "That request was too large.")
            return message

        await self.app(scope, limited_receive, send_with_headers)
