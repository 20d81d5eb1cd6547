"""Security on every request: client address, cross-origin check, body limit, headers."""

from __future__ import annotations

import functools
import ipaddress
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import Message, Receive, Scope

from web.audit import Listener
from web.audit import context as audit_context
from web.settings import Network

MAX_BODY = 1024 * 1024
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HSTS_MAX_AGE = 2 * 365 * 86400

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


def real_client(peer: str, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The client's address: the peer, or the last X-Forwarded-For hop that no trusted proxy added."""

    if not forwarded_for:  # the usual case: no proxy header to weigh
        return canonical_ip(peer)

    def is_trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in trusted)

    if not is_trusted(peer):
        return canonical_ip(peer)
    nearest = peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return canonical_ip(nearest)  # garbage: believe only what our own proxies vouched for
        if not is_trusted(hop):
            return canonical_ip(hop)
        nearest = hop
    return canonical_ip(nearest)


@functools.lru_cache(maxsize=4096)  # parsed once per address, not once per request
def canonical_ip(address: str) -> str:
    """One spelling per address: IPv6 compressed and lower-case, IPv4-mapped IPv6 as IPv4."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # not an IP (a test client's name, a unix socket): used as it is
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def client_ip(conn: HTTPConnection) -> str:
    """The real client's canonical address (the middleware below has already worked it out)."""
    return conn.client.host if conn.client else "unknown"


def in_networks(ip: str, networks: tuple[Network, ...]) -> bool:
    """Whether an address (as client_ip gives it) is in one of these networks."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in net for net in networks)


def client_network(ip: str) -> str:
    """What rate limits count by: the address, or for IPv6 its /64 (one customer's allocation)."""
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


def _origin(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) with default ports filled in, or None for what is not an origin."""
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:  # "http://[", "http://h:99999": not an origin any page of ours would send
        return None
    if not parts.scheme or not parts.hostname:
        return None
    return parts.scheme.lower(), parts.hostname.lower(), port


def is_cross_origin(scope: Scope, scheme: str) -> bool:
    """Whether a state-changing request comes from another site (a CSRF attempt).

    `scheme` is the one our pages are served over: with Secure cookies, https whatever a TLS
    proxy in front says; so an http:// page on our host name cannot post to the https one.
    """
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
    theirs = _origin(origin)
    ours = _origin(f"{scheme}://{headers.get('host', '')}")
    return theirs is None or theirs != ours


class Security:
    """What the shell (web/shell.py) does for security on every request: it works out the real
    client, refuses cross-site forms and oversized bodies, and adds the security headers."""

    def __init__(
        self,
        *,
        trusted_proxies: tuple[Network, ...],
        https: bool = True,
        audit_listener: Listener | None = None,
    ) -> None:
        self.audit_listener = audit_listener
        self.trusted_proxies = trusted_proxies
        self.https = https
        headers = dict(HEADERS)
        if https:
            # Once seen over HTTPS, browsers refuse plain http to this host for a year.
            headers["Strict-Transport-Security"] = f"max-age={HSTS_MAX_AGE}"
        # As bytes, once: every response gets them (unless it set its own).
        self.raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        self.names = frozenset(name for name, _ in self.raw)

    def admit(self, scope: Scope) -> tuple[tuple[int, str] | None, bool]:
        """Put the real client in the scope; return the refusal (status, message) it earns, if
        any, and whether only limited() can hold its body to MAX_BODY: a chunked body names no
        length, and neither does a body over HTTP/2 without Content-Length. A declared length
        bounds the body (the parser reads no further); a GET without Transfer-Encoding has
        none that a handler reads."""
        # The headers read on every request, in one pass over them (as Starlette reads them).
        forwarded_for: list[str] = []
        length = ""
        unbounded = False
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded_for.append(value.decode("latin-1"))
            elif name == b"content-length" and not length:
                length = value.decode("latin-1")
            elif name == b"transfer-encoding":
                unbounded = True
        if self.audit_listener is not None:
            audit_context.set((self.audit_listener, scope))
        if scope.get("client"):
            peer, port = scope["client"]
            scope["client"] = (real_client(peer, ",".join(forwarded_for) or None, self.trusted_proxies), port)
        unbounded = unbounded or not (length or scope["method"] in SAFE_METHODS)
        if is_cross_origin(scope, "https" if self.https else scope.get("scheme", "http")):
            return (403, "This form was sent from another site, so it was refused."), unbounded
        if length.isascii() and length.isdigit() and int(length) > MAX_BODY:  # "²".isdigit() too
            return (413, "That request was too large."), unbounded
        return None, unbounded

    def add_headers(self, message: Message) -> None:
        """The security headers, on a response's start message (a handler's own win)."""
        own = list(message.get("headers", ()))
        present = self.names.intersection([name for name, _ in own])
        message["headers"] = own + ([h for h in self.raw if h[0] not in present] if present else self.raw)


def limited(receive: Receive) -> Receive:
    """`receive`, cutting off a body past MAX_BODY: one that names no length (Security.admit)."""
    received = 0

    async def limited_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > MAX_BODY:
                raise HTTPException(413, "That request was too large.")
        return message

    return limited_receive
