"""The session cookie and what Redis holds: signed ids, hashed keys, no writes for anonymous views."""

from __future__ import annotations

import httpx
from redis import Redis
from starlette.applications import Starlette

from tests.conftest import PASSWORD, login, make_client, running, session_keys, set_session_cookie, signup
from tests.helpers.servers import command_calls
from web.services import Services
from web.sessions import Session, Signer
from web.sessions.ids import digest
from web.settings import Settings

WRITES = ("set", "hset", "setex", "getex", "expire", "pexpire", "del", "zadd", "incr", "evalsha", "eval")


def write_calls(redis: Redis) -> dict[str, int]:
    return {k: n for k, n in command_calls(redis).items() if k in WRITES}


async def test_cookie_attributes_are_strict(client: httpx.AsyncClient) -> None:
    r = await signup(client)
    (cookie,) = [c for c in r.headers.get_list("set-cookie") if c.startswith("__Host-sid=")]
    for attribute in ("HttpOnly", "SameSite=Lax", "Path=/", "Secure"):
        assert attribute in cookie
    assert "Domain" not in cookie and "Max-Age" not in cookie and "Expires" not in cookie


async def test_cookie_without_secure_when_configured(settings: Settings) -> None:
    async with running(settings, cookie_secure=False) as app, make_client(app) as client:
        r = await signup(client)
    (cookie,) = [c for c in r.headers.get_list("set-cookie") if c.startswith("sid=")]
    assert "Secure" not in cookie and "HttpOnly" in cookie


async def test_redis_holds_no_raw_session_id(client: httpx.AsyncClient, redis: Redis, app: Starlette) -> None:
    await signup(client)
    signed = client.cookies["__Host-sid"]
    raw_id = signed.split(".")[0]
    dump = []
    for key in redis.scan_iter("*"):
        dump.append(key)
        kind = redis.type(key)
        if kind == "hash":
            dump.extend(f"{k}={v}" for k, v in redis.hgetall(key).items())
        elif kind == "zset":
            dump.extend(redis.zrange(key, 0, -1))
    text = "\n".join(dump)
    assert raw_id not in text and signed not in text
    assert f"s:{digest(raw_id)}" in text


async def test_anonymous_views_write_nothing_and_set_no_cookie(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    before = write_calls(redis)
    for path in ("/", "/login", "/signup", "/logout", "/session", "/static/app.css", "/healthz", "/nowhere"):
        r = await client.get(path)
        assert "set-cookie" not in r.headers, path
    assert write_calls(redis) == before
    assert redis.dbsize() == 0


async def test_tampered_or_foreign_cookies_are_anonymous(client: httpx.AsyncClient, app: Starlette) -> None:
    await signup(client)
    good = client.cookies["__Host-sid"]
    sid, _, mac = good.partition(".")
    tampered = [
        sid + "." + mac[:-2] + ("AA" if not mac.endswith("AA") else "BB"),
        sid[:-1] + ("A" if sid[-1] != "A" else "B") + "." + mac,
        sid,
        "",
        "." * 200,
        "x" * 5000,
        "\u00e9t\u00e9",
        Signer((b"another-secret-key-0123456789abcdefghijkl",)).sign(sid),
    ]
    async with make_client(app) as stranger:
        for value in tampered:
            r = await stranger.get("/", headers=[(b"cookie", f"__Host-sid={value}".encode())])
            assert r.status_code == 303, value
            assert r.headers["location"] == "/login"


async def test_unknown_id_is_never_adopted(app: Starlette, redis: Redis) -> None:
    svc: Services = app.state.services
    planted = "A" * 43  # well-formed, correctly signed (say, a leaked key), but never issued
    session = Session(svc.store, planted)
    await session.load()
    assert session.id is None
    session["note"] = "hello"
    await session.commit()
    assert session.id is not None and session.id != planted
    assert redis.exists(f"s:{digest(planted)}") == 0


def test_cookie_signatures_are_plain_hmac_sha256_so_a_release_keeps_everyone_signed_in() -> None:
    """Cookies signed by an earlier release (a fresh HMAC per cookie) still verify: the MAC is
    HMAC-SHA256 of "purpose:value", base64url without padding, under each key; each use starts
    from the key alone (a reused HMAC would absorb the previous message)."""
    import base64
    import hashlib
    import hmac

    current, retiring = b"k" * 32, b"r" * 32
    signer = Signer((current, retiring))
    value = "A" * 43

    def expected(key: bytes, purpose: str) -> str:
        mac = hmac.new(key, f"{purpose}:{value}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    assert signer.sign(value) == f"{value}.{expected(current, 'session')}"
    assert signer.sign(value) == f"{value}.{expected(current, 'session')}"  # again: the same
    assert signer.mac("device", value, retiring) == expected(retiring, "device")
    assert signer.unsign(f"{value}.{expected(retiring, 'session')}") == (value, False)


async def test_rotated_secret_key_still_verifies_and_re_signs(settings: Settings) -> None:
    old_key = settings.secret_keys[0]
    async with running(settings) as app, make_client(app) as client:
        await signup(client)
        await client.post("/login", data={"email": "ada@example.com", "password": PASSWORD, "remember": "1"})
        old_cookie = client.cookies["__Host-sid"]
    rotated = (b"the-new-primary-key-0123456789abcdefghij", old_key)
    async with running(settings, secret_keys=rotated) as app, make_client(app) as client:
        set_session_cookie(client, old_cookie)
        # A request that never reads the session does not re-sign it: it would not know that the
        # cookie outlives the browser ("keep me signed in"), and the new one would not.
        assert "set-cookie" not in (await client.get("/static/app.js")).headers
        r = await client.get("/")
        assert r.status_code == 200
        fresh = r.headers["set-cookie"].split(";")[0].split("=", 1)[1]
        assert fresh != old_cookie and fresh.split(".")[0] == old_cookie.split(".")[0]
        assert "Max-Age=" in r.headers["set-cookie"]
        # Once the old key is dropped, only the re-signed cookie works.
    async with running(settings, secret_keys=rotated[:1]) as app, make_client(app) as client:
        set_session_cookie(client, old_cookie)
        assert (await client.get("/")).status_code == 303
        set_session_cookie(client, fresh)
        assert (await client.get("/")).status_code == 200


async def test_responses_that_read_the_session_vary_on_cookie(client: httpx.AsyncClient) -> None:
    await signup(client)
    r = await client.get("/")
    assert "Cookie" in r.headers["vary"]
    assert r.headers["cache-control"] == "no-store"


async def test_per_user_index_follows_every_session(
    client: httpx.AsyncClient, app: Starlette, redis: Redis
) -> None:
    await signup(client)
    (index,) = redis.keys("u:*")
    first = session_keys(redis)
    assert [f"s:{d}" for d in redis.zrange(index, 0, -1)] == first
    async with make_client(app) as other:
        await login(other)
        assert redis.zcard(index) == 2
        assert sorted(f"s:{d}" for d in redis.zrange(index, 0, -1)) == session_keys(redis)
        await other.post("/logout")
    assert [f"s:{d}" for d in redis.zrange(index, 0, -1)] == first
    # The index expires with the longest session it can hold, never later.
    assert 0 < redis.ttl(index) <= app.state.services.settings.session_absolute_timeout
