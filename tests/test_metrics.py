"""GET /metrics: request counts and latency by route template, access control, and the sum
over real uvicorn worker processes."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter as Tally
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from web import metrics
from web.embedded import free_port
from web.metrics import MAIL_QUEUE_DEPTH, UNMATCHED, RequestMetrics, metrics_route, secrets_equal
from web.security import Security
from web.settings import Network
from web.shell import Shell

LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
TOKEN = "scrape-token-0123456789abcdef"
OUTSIDER = ("203.0.113.9", 40000)


async def item(request: Request) -> Response:
    return PlainTextResponse(f"item {request.path_params['id']}")


async def boom(request: Request) -> Response:
    raise RuntimeError("a bug")


async def half(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        yield b"the start of a page"
        raise RuntimeError("a bug in the middle")

    return StreamingResponse(body())


async def pid(request: Request) -> Response:
    # Busy for a moment, so the next connection is accepted by the other worker.
    await asyncio.sleep(0.005)
    metrics.BCRYPT_QUEUE.inc()  # a job that never finishes: what a worker dying mid-hash leaves
    return PlainTextResponse(str(os.getpid()))


def build(token: str | None = None, readings: dict[Gauge, metrics.Reading] | None = None) -> Starlette:
    return Starlette(
        routes=[
            Route("/items/{id}", item),
            Route("/boom", boom),
            Route("/half", half),
            Route("/pid", pid),
            Mount("/shop", routes=[Route("/carts/{id}", item)]),
            Mount("/files", app=PlainTextResponse("a file")),
            metrics_route(LOOPBACK, token, readings=readings),
        ],
        middleware=[Middleware(Shell, security=Security(trusted_proxies=()), metrics=RequestMetrics())],
    )


def worker_app() -> Starlette:
    """The factory each uvicorn worker of the multi-process test calls."""
    return build()


def client(app: Starlette, peer: tuple[str, int] = ("127.0.0.1", 40000), **kw: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=peer, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=kw)


def value(text: str, name: str, **labels: str) -> float:
    """One sample of a scrape, 0 if absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


@pytest.fixture
async def app_client() -> AsyncIterator[httpx.AsyncClient]:
    async with client(build(TOKEN)) as c:
        yield c


async def scrape(c: httpx.AsyncClient) -> str:
    r = await c.get("/metrics")
    assert r.status_code == 200
    return r.text


async def test_requests_are_counted_and_timed_by_route_template(app_client: httpx.AsyncClient) -> None:
    before = await scrape(app_client)
    for n in range(3):
        assert (await app_client.get(f"/items/{n}")).status_code == 200
    assert (await app_client.post("/items/9")).status_code == 405
    assert (await app_client.get("/shop/carts/7")).status_code == 200
    assert (await app_client.get("/files/a/b.txt")).status_code == 200
    after = await scrape(app_client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {"route": "/items/{id}", "method": "GET", "status": "200"}
    assert delta("web_requests_total", **ok) == 3
    assert delta("web_requests_total", route="/items/{id}", method="POST", status="405") == 1
    assert delta("web_requests_total", route="/shop/carts/{id}", method="GET", status="200") == 1
    assert delta("web_requests_total", route="/files/{path}", method="GET", status="200") == 1
    assert delta("web_request_duration_seconds_count", route="/items/{id}") == 4
    assert delta("web_request_duration_seconds_bucket", route="/items/{id}", le="+Inf") == 4
    assert delta("web_request_duration_seconds_bucket", route="/items/{id}", le="5.0") == 4
    assert not any(raw in after for raw in ("/items/1", "/shop/carts/7", "b.txt"))
    assert "# HELP web_requests_total HTTP requests" in after


async def test_unknown_paths_share_one_label(app_client: httpx.AsyncClient) -> None:
    before = await scrape(app_client)
    paths = [f"/probe/{uuid.uuid4().hex}" for _ in range(3)]
    for path in paths:
        assert (await app_client.get(path)).status_code == 404
    after = await scrape(app_client)
    labels = {"route": UNMATCHED, "method": "GET", "status": "404"}
    assert value(after, "web_requests_total", **labels) - value(before, "web_requests_total", **labels) == 3
    assert not any(path in after for path in paths)


async def test_unknown_methods_are_other(app_client: httpx.AsyncClient) -> None:
    before = await scrape(app_client)
    await app_client.request("BREW", "/items/1")
    after = await scrape(app_client)
    labels = {"route": "/items/{id}", "method": "other", "status": "405"}
    assert value(after, "web_requests_total", **labels) - value(before, "web_requests_total", **labels) == 1
    assert "BREW" not in after


async def test_an_exception_counts_as_500(app_client: httpx.AsyncClient) -> None:
    before = await scrape(app_client)
    assert (await app_client.get("/boom")).status_code == 500
    after = await scrape(app_client)
    labels = {"route": "/boom", "method": "GET", "status": "500"}
    assert value(after, "web_requests_total", **labels) - value(before, "web_requests_total", **labels) == 1


async def test_an_exception_after_the_status_was_sent_counts_as_500(app_client: httpx.AsyncClient) -> None:
    before = await scrape(app_client)
    assert (await app_client.get("/half")).status_code == 200  # the client saw 200, then a cut
    after = await scrape(app_client)
    labels = {"route": "/half", "method": "GET", "status": "500"}
    assert value(after, "web_requests_total", **labels) - value(before, "web_requests_total", **labels) == 1
    assert value(after, "web_requests_total", route="/half", method="GET", status="200") == 0


def samples(registry: CollectorRegistry, name: str, route: str) -> dict[tuple[str, str], float]:
    """The histogram's samples for one route label: (sample name, le) -> value."""
    return {
        (sample.name, sample.labels.get("le", "")): sample.value
        for family in registry.collect()
        if family.name == name
        for sample in family.samples
        if sample.labels.get("route") == route and not sample.name.endswith("_created")
    }


async def test_a_flushed_tally_reads_as_prometheus_own_observe_would() -> None:
    """Latencies on each bucket bound, between bounds and past the last, in two flushes: the
    histogram then holds what Histogram.observe() would have made of them, bucket for bucket."""
    route = f"/tally-{uuid.uuid4().hex[:8]}"
    seconds = [0.0, *metrics.BUCKETS, *(b * 0.9 for b in metrics.BUCKETS), 0.0003, 7.5, 60.0]
    reference = CollectorRegistry()
    expected = Histogram(
        "web_request_duration_seconds", "same", ["route"], buckets=metrics.BUCKETS, registry=reference
    )
    recorder = RequestMetrics()
    scope = {"type": "http", "method": "GET", "route": Route(route, item), "router": None}
    for half in (seconds[::2], seconds[1::2]):
        for s in half:
            recorder.record(scope, 200, s)
            expected.labels(route).observe(s)
        metrics.flush()
    got = samples(REGISTRY, "web_request_duration_seconds", route)
    want = samples(reference, "web_request_duration_seconds", route)
    total = ("web_request_duration_seconds_sum", "")
    assert got.pop(total) == pytest.approx(want.pop(total))  # the same sum, added in another order
    assert got == want
    assert got[("web_request_duration_seconds_count", "")] == len(seconds)
    assert value(generate_latest().decode(), "web_requests_total", route=route, status="200") == len(seconds)


async def test_a_request_reaches_prometheus_within_the_flush_interval() -> None:
    """No scrape in this process, no flush() called: the timer hands the tally over."""
    route = f"/timer-{uuid.uuid4().hex[:8]}"
    RequestMetrics().record({"type": "http", "method": "GET", "route": Route(route, item)}, 200, 0.01)
    labels = {"route": route, "method": "GET", "status": "200"}
    deadline = time.monotonic() + metrics.FLUSH_S + 5
    while REGISTRY.get_sample_value("web_requests_total", labels) != 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)  # polling a condition, with the bound above


async def test_events_recorded_by_the_app_appear(app_client: httpx.AsyncClient) -> None:
    before = await scrape(app_client)
    metrics.sign_in("ok")
    metrics.sign_in("second_factor_pending")
    metrics.sign_in("wrong_password")
    metrics.sign_in("wrong_password")
    metrics.session_created("sign_in")
    metrics.session_ended("revoked", 3)
    metrics.session_ended("revoked", 0)
    metrics.service_error("redis")
    metrics.mail_sent()
    metrics.mail_send_failed("transient")
    with metrics.bcrypt_job():
        during = await scrape(app_client)
    after = await scrape(app_client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("web_sign_ins_total", outcome="wrong_password") == 2
    assert delta("web_sign_ins_total", outcome="ok") == 1
    assert delta("web_sign_ins_total", outcome="second_factor_pending") == 1
    assert delta("web_sign_ins_total", outcome="throttled") == 0
    assert 'web_sign_ins_total{outcome="throttled"}' in after  # present at 0, so rate() works at once
    assert delta("web_sessions_created_total", reason="sign_in") == 1
    assert delta("web_sessions_ended_total", reason="revoked") == 3
    assert delta("web_service_errors_total", service="redis") == 1
    assert delta("web_mail_sent_total") == 1
    assert delta("web_mail_send_failures_total", kind="transient") == 1
    assert delta("web_mail_send_failures_total", kind="permanent") == 0
    assert value(during, "web_bcrypt_queue_length") - value(after, "web_bcrypt_queue_length") == 1


async def test_readings_are_taken_at_scrape_time(caplog: pytest.LogCaptureFixture) -> None:
    depth = 0

    async def queue_depth() -> float:
        nonlocal depth
        depth += 5
        return depth

    async def broken() -> float:
        raise ConnectionError("store down")

    broken_gauge = Gauge("web_test_broken", "A reading that fails.", multiprocess_mode="mostrecent")
    async with client(build(readings={MAIL_QUEUE_DEPTH: queue_depth, broken_gauge: broken})) as c:
        assert value(await scrape(c), "web_mail_queue_depth") == 5
        with caplog.at_level(logging.WARNING, logger="web.metrics"):
            assert value(await scrape(c), "web_mail_queue_depth") == 10
    assert "store down" in caplog.text


async def test_loopback_may_read_with_no_store() -> None:
    for peer in (("127.0.0.1", 1), ("::1", 1), ("::ffff:127.0.0.1", 1)):
        async with client(build(), peer=peer) as c:
            r = await c.get("/metrics")
            assert r.status_code == 200, peer
            assert r.headers["cache-control"] == "no-store"
            assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
            assert "web_requests_total" in r.text


async def test_openmetrics_when_asked() -> None:
    async with client(build(), accept="application/openmetrics-text; version=1.0.0") as c:
        r = await c.get("/metrics")
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.endswith("# EOF\n")


@pytest.mark.parametrize(
    "accept", ["text/plain; version=x", "application/openmetrics-text; version=1.0.0-rc1", "*/*; version=;"]
)
async def test_an_accept_header_it_cannot_read_gets_the_text_format(accept: str) -> None:
    async with client(build(), accept=accept) as c:
        r = await c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "web_requests_total" in r.text


async def unknown_and_metrics(c: httpx.AsyncClient, method: str = "GET") -> tuple[httpx.Response, ...]:
    unknown = await c.request(method, "/nothing-here")
    return unknown, await c.request(method, "/metrics")


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "DELETE"])
async def test_others_get_the_same_404_as_an_unknown_address(method: str) -> None:
    async with client(build(TOKEN), peer=OUTSIDER) as c:
        unknown, refused = await unknown_and_metrics(c, method)
    assert refused.status_code == unknown.status_code == 404
    assert refused.content == unknown.content
    assert refused.headers == unknown.headers


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (f"Bearer {TOKEN}", 200),
        (f"bearer  {TOKEN} ", 200),
        (f"Bearer {TOKEN}x", 404),
        (f"Bearer {TOKEN[:-1]}", 404),
        ("Bearer ", 404),
        (f"Basic {TOKEN}", 404),
        (TOKEN, 404),
    ],
)
async def test_bearer_token(authorization: str, status: int) -> None:
    async with client(build(TOKEN), peer=OUTSIDER, authorization=authorization) as c:
        assert (await c.get("/metrics")).status_code == status


async def test_no_token_configured_means_no_token_accepted() -> None:
    for token in (None, ""):
        async with client(build(token), peer=OUTSIDER, authorization="Bearer ") as c:
            assert (await c.get("/metrics")).status_code == 404


def test_token_check_takes_as_long_wherever_the_guess_goes_wrong() -> None:
    # A plain == returns at the first differing character: ~1000 times faster for an early
    # mismatch than a late one with a token this long. A constant-time check takes the same.
    secret = "s" * 2_000_000
    early, late = "x" + secret[1:], secret[:-1] + "x"

    def fastest(guess: str) -> float:
        runs = []
        for _ in range(7):
            start = time.perf_counter()
            assert not secrets_equal(guess, secret)
            runs.append(time.perf_counter() - start)
        return min(runs)

    assert 0.5 < fastest(early) / fastest(late) < 2
    assert secrets_equal(secret, "s" * 2_000_000)


# Exactly what `python -m web` does with WEB_CONCURRENCY=2: a fresh directory, then uvicorn
# spawns the workers with it in their environment.
LAUNCHER = """
import sys, uvicorn
from web.metrics import multiprocess_dir
with multiprocess_dir(2) as path:
    print(path, flush=True)
    uvicorn.run("tests.test_metrics:worker_app", factory=True, workers=2, host="127.0.0.1",
                port=int(sys.argv[1]), log_level="warning", timeout_graceful_shutdown=2)
"""


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[str]]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    with (tmp_path / "uvicorn.log").open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, str(port)],
            cwd=Path(__file__).resolve().parent.parent,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    try:
        assert server.stdout is not None
        directory = Path(server.stdout.readline().strip())
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{base}/metrics", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, (tmp_path / "uvicorn.log").read_text()
                time.sleep(0.05)
        yield base, directory, server
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=15)


async def serve_from_both(base: str) -> Tally[int]:
    """Requests to /pid, fresh connections, until each of the two workers has served some."""
    served: Tally[int] = Tally()
    async with httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_keepalive_connections=0)) as c:
        for _ in range(20):
            replies = await asyncio.gather(*(c.get("/pid") for _ in range(10)))
            served.update(int(r.text) for r in replies)
            if len(served) == 2 and min(served.values()) >= 3:
                return served
    raise AssertionError(f"one worker served everything: {served}")


@pytest.mark.slow
async def test_workers_are_summed_and_dead_ones_drop_out_of_live_gauges(
    two_workers: tuple[str, Path, subprocess.Popen[str]],
) -> None:
    base, directory, server = two_workers
    served = await serve_from_both(base)
    assert {f"counter_{p}.db" for p in served} <= {p.name for p in directory.iterdir()}
    total = sum(served.values())
    route = {"route": "/pid", "method": "GET", "status": "200"}
    async with httpx.AsyncClient(base_url=base, timeout=2) as c:
        # The worker that answers the scrape counts its own requests at once; the other one's
        # arrive with its next flush, at most FLUSH_S later.
        deadline = time.monotonic() + metrics.FLUSH_S + 5
        while value(text := (await c.get("/metrics")).text, "web_requests_total", **route) < total:
            assert time.monotonic() < deadline, text
            await asyncio.sleep(0.1)  # polling a condition, with the bound above
        assert value(text, "web_requests_total", **route) == total
        assert value(text, "web_request_duration_seconds_count", route="/pid") == total
        assert value(text, "web_bcrypt_queue_length") == total

        victim, survivor = served.most_common()
        os.kill(victim[0], signal.SIGKILL)  # uvicorn starts a replacement; nobody tells us
        deadline = time.monotonic() + 15
        while value(text, "web_bcrypt_queue_length") != survivor[1]:
            assert time.monotonic() < deadline, text
            await asyncio.sleep(0.1)
            try:
                text = (await c.get("/metrics")).text
            except httpx.TransportError:
                text = ""  # a connection the dead worker had accepted
    # Counters keep what the dead worker counted; its in-flight gauge no longer counts.
    assert value(text, "web_requests_total", **route) == total

    server.send_signal(signal.SIGTERM)
    server.wait(timeout=15)
    assert not directory.exists()
