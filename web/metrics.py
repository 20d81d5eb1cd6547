"""GET /metrics: what the app counts, the middleware that times requests, and who may read it.

Recording a request adds it to a plain tally in this process; once a second, and before a
scrape, the tallies go to prometheus_client: its counters in this process or, in multi-process
mode (uvicorn workers), this worker's memory-mapped files under PROMETHEUS_MULTIPROC_DIR, which
the kernel writes back on its own. No I/O waits on the request path; the scrape merges.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import os
import shutil
import tempfile
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Literal, get_args

import anyio
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Scope

from web.settings import Network

log = logging.getLogger(__name__)

SignIn = Literal["ok", "wrong_password", "passkey_failed", "throttled", "second_factor_pending"]
Service = Literal["redis", "mongodb"]
MailFailure = Literal["transient", "permanent"]  # will be retried / was dropped
Reading = Callable[[], Awaitable[float]]

# Anything else a client sends is "other": label values must not be chosen by clients.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
KNOWN_METHODS = frozenset(METHODS)
UNMATCHED = "<unmatched>"  # the route label of a path no route matched; never the raw path
# A page takes 1-50 ms; bcrypt sign-ins a few hundred; the top buckets catch outages.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
FLUSH_S = 1.0  # how long a request may sit in this process's tally before prometheus_client has it
READING_TIMEOUT = 2.0  # seconds; a scrape must not hang on a service that is down
# Decided once, by PROMETHEUS_MULTIPROC_DIR, when prometheus_client was first imported.
MULTIPROCESS = values.ValueClass is not values.MutexValue

REQUESTS = Counter(
    "web_requests", "HTTP requests by route template, method and status.", ["route", "method", "status"]
)
LATENCY = Histogram(
    "web_request_duration_seconds",
    "Time from request to the last byte of the response, by route template.",
    ["route"],
    buckets=BUCKETS,
)
SIGN_INS = Counter("web_sign_ins", "Sign-in attempts by outcome.", ["outcome"])
SESSIONS_CREATED = Counter("web_sessions_created", "Sessions created, by reason.", ["reason"])
SESSIONS_ENDED = Counter("web_sessions_ended", "Sessions ended, by reason.", ["reason"])
SERVICE_ERRORS = Counter(
    "web_service_errors", "Redis and MongoDB outage errors seen by the app.", ["service"]
)
MAIL_SENT = Counter("web_mail_sent", "Mail messages handed to the SMTP server.")
MAIL_SEND_FAILURES = Counter(
    "web_mail_send_failures", "Failed mail delivery attempts: transient (retried) or permanent.", ["kind"]
)
# The queue is shared (one store for every worker), so the freshest reading is the true one.
MAIL_QUEUE_DEPTH = Gauge(
    "web_mail_queue_depth", "Mail messages waiting to be sent.", multiprocess_mode="mostrecent"
)
# Each worker has its own bcrypt threads: add up the workers that are alive.
BCRYPT_QUEUE = Gauge(
    "web_bcrypt_queue_length",
    "Password hashes and checks submitted and not yet finished.",
    multiprocess_mode="livesum",
)

# Children made once, so recording is one call, without .labels()' lock and string work.
_SIGN_INS = {outcome: SIGN_INS.labels(outcome) for outcome in get_args(SignIn)}
_SERVICE_ERRORS = {service: SERVICE_ERRORS.labels(service) for service in get_args(Service)}
_MAIL_FAILURES = {kind: MAIL_SEND_FAILURES.labels(kind) for kind in get_args(MailFailure)}


def sign_in(outcome: SignIn) -> None:
    """Count a sign-in attempt."""
    _SIGN_INS[outcome].inc()


@cache
def _created(reason: str) -> Counter:
    return SESSIONS_CREATED.labels(reason)


@cache
def _ended(reason: str) -> Counter:
    return SESSIONS_ENDED.labels(reason)


def session_created(reason: str) -> None:
    """Count a new session; `reason` is a fixed word from the code ("sign_in"), never input."""
    _created(reason).inc()


def session_ended(reason: str, n: int = 1) -> None:
    """Count `n` sessions ended for one reason ("sign_out", "revoked", "expired", ...)."""
    if n:
        _ended(reason).inc(n)


def service_error(service: Service) -> None:
    """Count an error that says Redis or MongoDB is unavailable (see web.errors.outage)."""
    _SERVICE_ERRORS[service].inc()


def mail_sent() -> None:
    """Count a message the SMTP server accepted."""
    MAIL_SENT.inc()


def mail_send_failed(kind: MailFailure) -> None:
    """Count a failed delivery attempt."""
    _MAIL_FAILURES[kind].inc()


@contextmanager
def bcrypt_job() -> Iterator[None]:
    """Count a hash or check as queued from submission until it finishes."""
    BCRYPT_QUEUE.inc()
    try:
        yield
    finally:
        BCRYPT_QUEUE.dec()


def route_templates(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[BaseRoute, str]]:
    """Every route with its full path template, mounts included ("/static/{path}")."""
    for route in routes:
        if not isinstance(route, Route | Mount):
            continue
        yield route, prefix + route.path_format
        if isinstance(route, Mount):
            yield from route_templates(route.routes, prefix + route.path_format.removesuffix("/{path}"))


class _Tally:
    """One (route, method, status)'s requests since the last flush, and where they go then."""

    __slots__ = ("buckets", "count", "counter", "histogram", "route", "total")

    def __init__(self, route: object, counter: Counter, histogram: Histogram) -> None:
        self.route = route  # held, so that its id is not reused while the tally exists
        self.counter = counter
        self.histogram = histogram
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * len(histogram._upper_bounds)  # not cumulative, as the histogram keeps them


_unflushed: list[_Tally] = []  # tallies with requests in them
_timer: tuple[asyncio.AbstractEventLoop, asyncio.TimerHandle] | None = None


def flush() -> None:
    """Hand the requests recorded since the last flush to prometheus_client (its locks, and in
    multi-process mode its files): at most FLUSH_S after a request, and before every scrape."""
    global _timer
    if _timer is not None:
        _timer[1].cancel()
        _timer = None
    tallies = _unflushed.copy()
    _unflushed.clear()
    for tally in tallies:
        tally.counter.inc(tally.count)
        # What Histogram.observe() does once per request, once per bucket; the same attributes.
        tally.histogram._sum.inc(tally.total)
        for value, n in zip(tally.histogram._buckets, tally.buckets, strict=True):
            if n:
                value.inc(n)
        tally.count, tally.total, tally.buckets = 0, 0.0, [0] * len(tally.buckets)


class RequestMetrics:
    """Count and time every HTTP request by the template of the route that answered it (the
    shell, web/shell.py, calls record() once a request is done).

    A request is added to a plain tally in this process; flush() hands the tallies to
    prometheus_client once a second and before a scrape. Its Counter.inc() and
    Histogram.observe() on every request, each value behind a lock, were 3% of a signed-in
    page's CPU. In multi-process mode a scrape then sees the other workers as of their last
    flush, at most FLUSH_S old.
    """

    def __init__(self) -> None:
        self._tallies: dict[tuple[int, str, int], _Tally] = {}  # by (id(route), method, status)

    def record(self, scope: Scope, status: int, seconds: float) -> None:
        # Starlette's router leaves the route it matched in this same scope dict.
        route = scope.get("route")
        method = scope["method"]
        if method not in KNOWN_METHODS:
            method = "other"
        tally = self._tallies.get((id(route), method, status))
        if tally is None:
            tally = self._add(scope, route, method, status)
        if not tally.count:
            _unflushed.append(tally)
            _flush_soon()
        tally.count += 1
        tally.total += seconds
        tally.buckets[bisect_left(tally.histogram._upper_bounds, seconds)] += 1

    def _add(self, scope: Scope, route: object, method: str, status: int) -> _Tally:
        template = UNMATCHED
        if route is not None:
            router = scope.get("router")
            found = (t for r, t in route_templates(getattr(router, "routes", ())) if r is route)
            template = next(found, getattr(route, "path_format", UNMATCHED))
        tally = _Tally(route, REQUESTS.labels(template, method, str(status)), LATENCY.labels(template))
        self._tallies[(id(route), method, status)] = tally
        return tally


def _flush_soon() -> None:
    global _timer
    loop = asyncio.get_running_loop()
    if _timer is None or _timer[0] is not loop:  # none yet, or one on a loop that has ended (tests)
        _timer = (loop, loop.call_later(FLUSH_S, flush))


def _allowed(client: tuple[str, int] | None, allow: tuple[Network, ...]) -> bool:
    if client is None:
        return False
    try:
        ip = ipaddress.ip_address(client[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped  # a dual-stack listener shows IPv4 clients as ::ffff:a.b.c.d
    return any(ip in net for net in allow)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


def token_matches(authorization: str | None, token: str | None) -> bool:
    """Whether an Authorization header carries this bearer token, in constant time."""
    if not token or not authorization:
        return False
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return secrets_equal(presented.strip(), token)


def secrets_equal(a: str, b: str) -> bool:
    """Compare two secrets in a time that tells nothing of where they differ, or their lengths."""
    return hmac.compare_digest(_digest(a), _digest(b))


def _prune_dead(path: str) -> None:
    # uvicorn restarts dead workers without telling us; their live gauges must stop counting.
    for name in os.listdir(path):
        if not name.startswith("gauge_live"):
            continue
        pid = name.removesuffix(".db").rpartition("_")[2]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            mark_process_dead(int(pid), path)  # type: ignore[no-untyped-call]
        except PermissionError:
            pass  # alive, someone else's


def _render(encoder: Callable[[CollectorRegistry], bytes]) -> bytes:
    if not MULTIPROCESS:
        return encoder(REGISTRY)
    # prometheus_client's own variable: the directory every worker writes its files in.
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    _prune_dead(path)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    return encoder(registry)


async def _read(readings: Mapping[Gauge, Reading]) -> None:
    for gauge, read in readings.items():
        try:
            with anyio.fail_after(READING_TIMEOUT):
                gauge.set(await read())
        except Exception as exc:
            # The scrape still answers; the gauge keeps its last value, the log says why.
            log.warning("metrics: could not read %r: %r", gauge, exc)


def metrics_endpoint(
    allow: tuple[Network, ...], token: str | None, *, readings: Mapping[Gauge, Reading] | None = None
) -> Callable[[Request], Awaitable[Response]]:
    """The /metrics handler: the metrics for `allow`ed addresses or the bearer token, else 404.

    `readings` are read at scrape time, for values every worker shares (the mail queue in the
    store); give them "mostrecent" gauges, so the scraping worker's fresh reading wins.
    """
    gauges = dict(readings or {})

    async def metrics(request: Request) -> Response:
        if request.method not in ("GET", "HEAD") or not (
            _allowed(request.client, allow) or token_matches(request.headers.get("authorization"), token)
        ):
            # What an unknown address gets, rendered by the app's own 404 handler.
            raise HTTPException(404)
        await _read(gauges)
        flush()  # this worker's latest requests; the others' are at most FLUSH_S old
        try:
            encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        except (TypeError, ValueError):  # "version=x": prometheus-client compares it as a number
            encoder, content_type = choose_encoder("")  # the classic text format
        body = await run_in_threadpool(_render, encoder)  # merging worker files reads the disk
        return Response(body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})

    return metrics


def metrics_route(
    allow: tuple[Network, ...], token: str | None, *, readings: Mapping[Gauge, Reading] | None = None
) -> Route:
    """GET /metrics, taking every method so that a refusal looks like any unknown address."""
    return Route(
        "/metrics", metrics_endpoint(allow, token, readings=readings), methods=list(METHODS), name="metrics"
    )


@contextmanager
def multiprocess_dir(workers: int) -> Iterator[Path | None]:
    """With more than one worker, give them a fresh metrics directory for this run; remove it after.

    Call it in the parent before uvicorn starts the workers: each worker then imports
    prometheus_client with PROMETHEUS_MULTIPROC_DIR set (uvicorn spawns, so they inherit it).
    """
    if workers <= 1:
        yield None
        return
    path = Path(tempfile.mkdtemp(prefix="web-metrics-"))
    previous = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        else:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = previous
        shutil.rmtree(path, ignore_errors=True)
