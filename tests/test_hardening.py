"""Hardening: client addresses as limits count them, header and body limits, HSTS, origins,
the embedded secret key, and logs that a request path cannot forge."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
import uvloop
from redis import Redis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.conftest import PASSWORD, login, make_client, running, signup
from web.embedded import free_port
from web.routes import routes
from web.security import Security, canonical_ip, client_network, real_client
from web.server import MAX_HEADER_BYTES, LimitedHttpToolsProtocol
from web.sessions import session_of
from web.settings import Settings, SettingsError
from web.shell import Shell

# -- client addresses -------------------------------------------------------------------------


def test_addresses_are_canonical_and_ipv6_limits_count_a_64() -> None:
    assert canonical_ip("::ffff:198.51.100.7") == "198.51.100.7"
    assert canonical_ip("2001:DB8:0:0::1") == "2001:db8::1"
    assert (
        client_network("2001:db8:1:2:aaaa::1")
        == client_network("2001:db8:1:2:ffff::9")
        == "2001:db8:1:2::/64"
    )
    assert client_network("2001:db8:1:3::1") != client_network("2001:db8:1:2::1")
    assert client_network("198.51.100.7") == "198.51.100.7"
    proxies = (ipaddress.ip_network("10.0.0.0/8"),)
    assert real_client("10.0.0.2", "::ffff:198.51.100.1", proxies) == "198.51.100.1"
    assert real_client("::ffff:10.0.0.2", "198.51.100.1", proxies) == "10.0.0.2"  # not trusted as mapped


@pytest.fixture
async def proxied(settings: Settings) -> AsyncIterator[Starlette]:
    proxy = (ipaddress.ip_network("127.0.0.1/32"),)
    async with running(settings, trusted_proxies=proxy, login_ip_max_failures=5) as app:
        yield app


async def test_one_ipv6_slash_64_is_one_client_for_the_limits(proxied: Starlette, redis: Redis) -> None:
    async with make_client(proxied) as c:
        await signup(c)
        await c.post("/logout")
        for i in range(5):  # five addresses of one /64, five accounts: the per-address limit
            headers = {"X-Forwarded-For": f"2001:db8:1:2::{i + 1}"}
            assert (
                await login(c, email=f"user{i}@example.com", password="wrong", headers=headers)
            ).status_code == 401
        assert (await login(c, headers={"X-Forwarded-For": "2001:db8:1:2:ffff::7"})).status_code == 429
        assert (await login(c, headers={"X-Forwarded-For": "2001:db8:1:3::1"})).status_code == 303
    assert redis.exists("t:i:2001:db8:1:2::/64")


async def test_ipv4_mapped_addresses_count_as_ipv4(proxied: Starlette, redis: Redis) -> None:
    async with make_client(proxied) as c:
        await login(
            c, email="x@example.com", password="wrong", headers={"X-Forwarded-For": "::ffff:198.51.100.7"}
        )
    assert redis.exists("t:i:198.51.100.7") and not list(redis.scan_iter("t:i:::ffff*"))


# -- request size -----------------------------------------------------------------------------


async def test_a_chunked_body_over_the_limit_is_413_even_in_one_field(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"email=a%40b.co&password="
        for _ in range(48):
            yield b"x" * 65536  # 3 MiB in one field, no Content-Length

    r = await client.post(
        "/login", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 413
    # One field over its own limit (64 KiB) inside an allowed body is 413 too.
    r = await client.post("/login", data={"email": "a@b.co", "password": "x" * 70_000})
    assert r.status_code == 413


@contextlib.asynccontextmanager
async def uvicorn_serving(
    app: ASGIApp, protocol: type[LimitedHttpToolsProtocol] = LimitedHttpToolsProtocol
) -> AsyncIterator[int]:
    """The app behind real uvicorn with the production protocol, on a free port."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=protocol, log_level="error")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await wait_until_listening(port)
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def wait_until_listening(port: int) -> None:
    async with asyncio.timeout(10):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.02)  # polling a condition, with the bound above
                continue
            writer.close()
            return


async def raw_request(port: int, head: bytes, body: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


async def bytes_accepted_of_a_huge_cookie(port: int) -> int:
    """Send a 16 MiB Cookie header; return how much went out before the server hung up."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nCookie: ")
    try:
        async with asyncio.timeout(10):
            while sent < 16 * 1024 * 1024:
                writer.write(b"a" * 65536)
                await writer.drain()
                sent += 65536
    except ConnectionError:
        return sent
    finally:
        writer.close()
    raise AssertionError("the server took a 16 MiB header")


async def test_request_headers_over_the_limit_get_431() -> None:
    async def hello(request: Request) -> Response:
        return Response("ok: " + str(len(await request.body())))

    app = Starlette(routes=[Route("/", hello, methods=["GET", "POST"])])
    async with uvicorn_serving(app) as port:
        # A head past the limit, still unfinished: the server answers 431 and hangs up.
        big = b"GET / HTTP/1.1\r\nHost: t\r\nCookie: " + b"a" * (MAX_HEADER_BYTES + 8192)
        assert (await raw_request(port, big)).startswith(b"HTTP/1.1 431 ")
        # 16 MiB of Cookie: the connection is cut long before the client has sent it all.
        assert await bytes_accepted_of_a_huge_cookie(port) < 4 * 1024 * 1024
        fine = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nCookie: " + b"a" * 8000 + b"\r\n\r\n"
        assert (await raw_request(port, fine)).startswith(b"HTTP/1.1 200 ")
        # Whole heads, each in one write (so in one read): past the limit, 431; within it, 200.
        for size, status in (
            (MAX_HEADER_BYTES + 1024, 431),
            (3 * MAX_HEADER_BYTES, 431),
            (MAX_HEADER_BYTES - 200, 200),
        ):
            whole = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nCookie: "
            whole += b"a" * (size - len(whole) - 4) + b"\r\n\r\n"
            assert (await raw_request(port, whole)).startswith(b"HTTP/1.1 %d " % status), size
        # A body bigger than the limit, in the same packets as small headers, is not a big head.
        body = b"x" * (4 * MAX_HEADER_BYTES)
        head = (
            f"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        reply = await raw_request(port, head, body)
        assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(f"ok: {len(body)}".encode())


async def test_a_pipelined_request_after_a_big_body_is_not_a_big_head() -> None:
    """A 40 KB body, then the start of the next request in the same read: that head is small
    (it used to be counted with the read it began in, and both answers were lost to a 431)."""

    async def hello(request: Request) -> Response:
        return Response("ok: " + str(len(await request.body())))

    app = Starlette(routes=[Route("/", hello, methods=["GET", "POST"])])
    async with uvicorn_serving(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = b"x" * 40_000
        writer.write(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        writer.write(b"GET / HTTP/1.1\r\nHo")
        await writer.drain()
        async with asyncio.timeout(10):
            first = await reader.readuntil(b"ok: 40000")
            writer.write(b"st: t\r\nConnection: close\r\n\r\n")
            rest = await reader.read()
        writer.close()
        assert first.startswith(b"HTTP/1.1 200 ")
        assert rest.endswith(b"ok: 0") and b" 431 " not in rest


def test_a_pipelined_request_on_a_lost_connection_does_not_raise_into_the_app() -> None:
    """Two requests in one write, the client gone while the first is being answered: uvicorn
    told only the newest request, and under uvloop (as served) the first one's next write
    raised into the app (a traceback and a 500 in the metrics) instead of going nowhere."""
    started, answered = asyncio.Event(), asyncio.Event()
    raised: list[BaseException] = []

    async def chunks() -> AsyncIterator[bytes]:
        started.set()
        yield b"x" * (16 * 1024 * 1024)  # more than the sockets hold: the write waits
        yield b"the end"

    async def slow(request: Request) -> Response:
        return StreamingResponse(chunks())

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await Starlette(routes=[Route("/", slow)])(scope, receive, send)
        except BaseException as exc:
            raised.append(exc)
            raise
        finally:
            answered.set()

    async def scenario() -> None:
        async with uvicorn_serving(app) as port:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 2)
            async with asyncio.timeout(10):
                await started.wait()
                writer.transport.abort()  # a reset, met by the server's pending write
                await answered.wait()

    uvloop.run(scenario())
    assert raised == []


class QuickDeadline(LimitedHttpToolsProtocol):
    request_timeout = 0.5


async def test_a_request_that_does_not_arrive_in_time_is_cut_off() -> None:
    """Half a head, half a body, or nothing at all: each connection is closed once the
    deadline passes (408 for a head), not held for as long as the client likes; and a request
    that arrives in time on the same kind of connection is answered."""
    bodies: list[int] = []

    async def hello(request: Request) -> Response:
        try:
            bodies.append(len(await request.body()))
        except ClientDisconnect:
            bodies.append(-1)
            raise
        return Response("ok")

    app = Starlette(routes=[Route("/", hello, methods=["GET", "POST"])])
    async with uvicorn_serving(app, QuickDeadline) as port:
        for sent, answer in (
            (b"GET / HTTP/1.1\r\nHost: t\r\nCookie: a", b"HTTP/1.1 408 "),
            (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nabc", b""),
            (b"", b""),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(sent)
            async with asyncio.timeout(5):  # far past the deadline: uvicorn alone never hangs up
                assert (await reader.read()).startswith(answer), sent
            writer.close()
        assert bodies == [-1]  # the app was told the client was gone
        fine = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        assert (await raw_request(port, fine)).startswith(b"HTTP/1.1 200 ")


async def test_trailers_are_not_kept_and_bytes_after_an_answer_do_not_hold_the_connection() -> None:
    """Trailers after a chunked body were appended to the request's headers with no size limit
    (60 MB of them took a worker to 1.8 GB); a CRLF sent after an answer stopped every timer."""
    seen: list[int] = []

    async def hello(request: Request) -> Response:
        await request.body()
        seen.append(len(request.scope["headers"]))
        return Response("ok")

    app = Starlette(routes=[Route("/", hello, methods=["GET", "POST"])])
    async with uvicorn_serving(app, QuickDeadline) as port:
        trailers = b"".join(b"x-evil-%d: 1\r\n" % i for i in range(1000))
        chunked = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        reply = await raw_request(port, chunked + b"1\r\na\r\n0\r\n" + trailers + b"\r\n")
        assert reply.startswith(b"HTTP/1.1 200 ") and seen == [3]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        async with asyncio.timeout(5):  # past the deadline, not uvicorn's keep-alive
            assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200 ")
            writer.write(b"\r\n")
            assert await reader.read() == b""  # closed
        writer.close()


# -- browser hardening ------------------------------------------------------------------------


async def test_a_trailing_slash_is_not_redirected_to_a_url_built_from_the_host_header(
    client: httpx.AsyncClient,
) -> None:
    """Starlette's default would answer /login/ with `Location: http://<Host>/login`: a link
    to whatever host the request named, over http behind a TLS proxy."""
    for path in ("/login/", "/account/", "/sessions/"):
        reply = await client.get(path, headers={"Host": "evil.example"})
        assert reply.status_code == 404, path
        assert "location" not in reply.headers


async def test_hsts_with_secure_cookies_only(settings: Settings) -> None:
    async with running(settings) as app, make_client(app) as c:
        hsts = (await c.get("/login")).headers["strict-transport-security"]
        assert int(hsts.removeprefix("max-age=").split(";")[0]) >= 365 * 86400
    async with running(settings, cookie_secure=False) as app, make_client(app) as c:
        assert "strict-transport-security" not in (await c.get("/login")).headers


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("https://testserver", 303),
        ("https://testserver:443", 303),
        ("http://testserver", 403),  # same host, another scheme: another origin
        ("https://testserver:8443", 403),
        ("https://testserver.evil.example", 403),
    ],
)
async def test_origin_must_match_scheme_host_and_port(
    client: httpx.AsyncClient, origin: str, status: int
) -> None:
    await signup(client)
    r = await client.post("/logout", headers={"Origin": origin})
    assert r.status_code == status


# -- the embedded secret key ------------------------------------------------------------------


def test_a_generated_secret_key_is_private_and_made_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = Settings.from_env({"DATA_DIR": str(data)}).secret_keys
    again = Settings.from_env({"DATA_DIR": str(data)}).secret_keys
    assert first == again and len(first[0]) >= 32
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "secret_key").stat().st_mode) == 0o600
    assert sorted(p.name for p in data.iterdir()) == ["secret_key"]  # no temporary file left


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [("", 0o600, "fewer than 32"), ("short", 0o600, "fewer than 32"), ("k" * 40, 0o644, "readable by other")],
)
def test_a_bad_secret_key_file_stops_the_app(tmp_path: Path, content: str, mode: int, message: str) -> None:
    (tmp_path / "secret_key").write_text(content)
    os.chmod(tmp_path / "secret_key", mode)
    with pytest.raises(SettingsError, match=message) as caught:
        Settings.from_env({"DATA_DIR": str(tmp_path)})
    assert str(caught.value).startswith("SECRET_KEY: ")


def test_an_existing_data_dir_is_made_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    os.chmod(data, 0o755)  # noqa: S103 - the loose mode an older version left
    Settings.from_env({"DATA_DIR": str(data)})
    assert stat.S_IMODE(data.stat().st_mode) == 0o700


# -- logs ---------------------------------------------------------------------------------


async def test_a_request_path_cannot_forge_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    pages = Starlette(routes=routes)  # for the error page's links
    guarded = Shell(broken, security=Security(trusted_proxies=()))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = pages
        await guarded(scope, receive, send)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        with caplog.at_level(logging.ERROR, logger="web"):
            r = await c.get('/x%0A{"event":"login_success","user_id":"admin"}')
    assert r.status_code == 500
    (record,) = [rec for rec in caplog.records if rec.name == "web"]
    assert "\n" not in record.getMessage() and "\\n" in record.getMessage()


async def test_the_audit_log_has_no_password_after_a_change(client: httpx.AsyncClient) -> None:
    await signup(client)
    r = await client.post("/account/password", data={"current_password": PASSWORD, "new_password": "x" * 3})
    assert r.status_code == 422


# -- HTTP errors --------------------------------------------------------------------------------


async def test_an_http_error_is_a_page_inside_the_session_layer_and_never_a_second_response(
    app: Starlette, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler's HTTPException becomes the error page, still passing the session layer (Vary:
    Cookie once the session was read); one raised after the response began gets no second
    response start: the client keeps the start it had, the connection is cut, the log says why."""

    async def gone(request: Request) -> Response:
        await session_of(request).load()
        raise HTTPException(410, "That link is no longer good.")

    async def late(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield b"the start of a page"
            raise HTTPException(404)

        return StreamingResponse(body())

    app.router.routes[:0] = [Route("/test-gone", gone), Route("/test-late", late)]
    async with make_client(app) as c:
        page = await c.get("/test-gone")
        assert page.status_code == 410 and "That link is no longer good." in page.text
        assert "Cookie" in page.headers["vary"] and page.headers["x-frame-options"] == "DENY"
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8000") as c:
        with caplog.at_level(logging.ERROR, logger="web"):
            cut = await c.get("/test-late")
    assert cut.status_code == 200 and cut.content == b"the start of a page"
    assert "/test-late" in caplog.text
