"""The account's whole life: remember me, the security activity, deleting the account."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from http.cookies import SimpleCookie

import httpx
import pytest
from pymongo.errors import ConnectionFailure
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from starlette.applications import Starlette

from tests.conftest import HX, PASSWORD, login, make_client, running, signup
from tests.helpers.smtp import MailServer
from tests.test_mail_flows import PUBLIC, confirmed_signup
from web import activity, deletion
from web.activity import Event
from web.auth.throttle import HOUR, account_tag
from web.auth.users import User
from web.sessions.ids import user_tag
from web.sessions.store import TOMBSTONE_TTL, epoch_key, short_user_id
from web.settings import Settings

JSON = {"Accept": "application/json"}
REMEMBER = 2_592_000
WITHIN = 10.0


@pytest.fixture
def smtp() -> Iterator[MailServer]:
    with MailServer() as server:
        yield server


@pytest.fixture
async def app(settings: Settings, smtp: MailServer) -> AsyncIterator[Starlette]:
    async with running(settings, smtp_url=f"smtp://127.0.0.1:{smtp.port}", public_url=PUBLIC) as application:
        sender = application.state.services.sender
        sender.claim_idle_ms, sender.min_backoff_s, sender.max_backoff_s = 300, 0.05, 0.2
        yield application


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(app) as c:
        yield c


def session_cookie(response: httpx.Response) -> str:
    (cookie,) = [c for c in response.headers.get_list("set-cookie") if c.startswith("__Host-sid=")]
    return cookie


def restarted(
    app: Starlette, before: httpx.AsyncClient, responses: list[httpx.Response]
) -> httpx.AsyncClient:
    """A new client with the cookies a browser keeps across a restart: those with Max-Age."""
    kept = httpx.Cookies()
    for response in responses:
        for header in response.headers.get_list("set-cookie"):
            parsed = SimpleCookie()
            parsed.load(header)
            for name, morsel in parsed.items():
                if morsel["max-age"] and int(morsel["max-age"]) > 0:
                    kept.set(name, morsel.value, domain="testserver.local")
    return make_client(app, cookies=kept)


# -- remember me --------------------------------------------------------------------------------


async def test_remember_me_gives_a_long_session_and_a_persistent_cookie(
    client: httpx.AsyncClient, app: Starlette, redis: Redis
) -> None:
    await signup(client)
    await client.post("/logout")
    plain = await client.post("/login", data={"email": "ada@example.com", "password": PASSWORD})
    assert "Max-Age" not in session_cookie(plain)
    assert (await client.get("/session", headers=JSON)).json()["remembered"] is False
    await client.post("/logout")
    kept = await client.post(
        "/login", data={"email": "ada@example.com", "password": PASSWORD, "remember": "1"}
    )
    cookie = session_cookie(kept)
    assert REMEMBER - 5 <= int(re.search(r"Max-Age=(\d+)", cookie).group(1)) <= REMEMBER  # type: ignore[union-attr]
    for attribute in ("HttpOnly", "Secure", "SameSite=Lax", "Path=/"):
        assert attribute in cookie
    status = (await client.get("/session", headers=JSON)).json()
    assert status["remembered"] is True and status["idle_timeout"] == 604_800
    keys = [k for k in redis.scan_iter("s:*") if redis.hexists(k, "u")]
    ttls = sorted(redis.pttl(k) for k in keys)
    assert ttls[-1] > 604_800_000 - 5_000  # the idle window of a remembered session
    assert "remembered" in (await client.get("/sessions")).text


async def test_a_remembered_session_survives_a_browser_restart_and_a_plain_one_does_not(
    app: Starlette,
) -> None:
    async with make_client(app) as first:
        up = await signup(first)
    for remember, survives in (("1", True), ("", False)):
        async with make_client(app) as browser:
            r = await browser.post(
                "/login", data={"email": "ada@example.com", "password": PASSWORD, "remember": remember}
            )
            assert r.status_code == 303
            async with restarted(app, browser, [up, r]) as after:
                assert ((await after.get("/")).status_code == 200) is survives


async def test_a_password_change_ends_remembered_sessions_too(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    await signup(client)
    async with make_client(app) as phone:
        await phone.post("/login", data={"email": "ada@example.com", "password": PASSWORD, "remember": "1"})
        change = {"current_password": PASSWORD, "new_password": "a brand new passphrase"}
        assert (await client.post("/account/password", data=change)).status_code == 303
        assert (await phone.get("/")).status_code == 303


# -- security activity --------------------------------------------------------------------------


async def events(app: Starlette, client: httpx.AsyncClient, before: str | None = None) -> dict[str, object]:
    await app.state.services.activity.flush()
    r = await client.get("/account/activity", params={"before": before} if before else None, headers=JSON)
    assert r.status_code == 200
    body: dict[str, object] = r.json()
    return body


async def test_each_kind_of_event_is_recorded_once(client: httpx.AsyncClient, app: Starlette) -> None:
    await signup(client)  # sign_up
    async with make_client(app) as attacker:
        for _ in range(10):  # sign_in_failed, ten times, then locked
            await login(attacker, password="not my password")
        await login(attacker, email="nobody@example.com", password="whatever")  # not stored anywhere
    async with make_client(app) as laptop:
        await login(laptop, headers={"X-Forwarded-For": "1"})  # locked for this address? no: own device
    await client.post("/password/forgot", data={"email": "ada@example.com"})  # reset_requested
    await client.post("/account/email", data={"new_email": "ada@new.example", "current_password": PASSWORD})
    got = await events(app, client)
    types = [e["type"] for e in got["events"]]  # type: ignore[index]
    assert types.count("sign_up") == 1
    assert types.count("sign_in_failed") == 10 and types.count("locked") == 1
    assert types.count("reset_requested") == 1 and types.count("email_change_requested") == 1
    first = got["events"][-1]  # type: ignore[index]
    assert first["type"] == "sign_up" and first["ip"] == "127.0.0.1" and first["browser"]
    assert await Event.find({"user_id": None}).count() == 0
    dump = str(got)
    assert PASSWORD not in dump and "not my password" not in dump and "__Host-sid" not in dump


async def test_sessions_ended_and_changes_say_by_whom(client: httpx.AsyncClient, app: Starlette) -> None:
    await signup(client)
    async with make_client(app) as phone:
        await login(phone)
        await client.post("/sessions/revoke-others")
        await login(phone)
        change = {"current_password": PASSWORD, "new_password": "a brand new passphrase"}
        await client.post("/account/password", data=change)
    rows = (await events(app, client))["events"]
    ended = [e["by"] for e in rows if e["type"] == "session_ended"]  # type: ignore[index]
    assert ended == ["a password change", "you, signing out everywhere else"]
    signed_in = [e["with"] for e in rows if e["type"] == "sign_in"]  # type: ignore[index]
    assert signed_in == ["password", "password"]
    assert [e["type"] for e in rows].count("password_changed") == 1  # type: ignore[index]
    # The phone's first sign-in was from a new browser; its second, from a known one.
    assert [e["type"] for e in rows].count("new_browser") == 1  # type: ignore[index]


async def test_pages_stay_stable_while_new_events_arrive(client: httpx.AsyncClient, app: Starlette) -> None:
    await signup(client)
    user = await User.find_one({"email": "ada@example.com"})
    assert user is not None
    log = app.state.services.activity
    for i in range(44):
        log({"event": "login_failure", "user_id": str(user.id), "ip": f"10.0.0.{i}", "user_agent": ""})
    first = await events(app, client)
    assert len(first["events"]) == 20 and first["next"]  # type: ignore[arg-type]
    for i in range(5):  # new activity meanwhile
        log({"event": "login_failure", "user_id": str(user.id), "ip": f"10.9.9.{i}", "user_agent": ""})
    second = await events(app, client, str(first["next"]))
    third = await events(app, client, str(second["next"]))
    seen = [e["ip"] for page in (first, second, third) for e in page["events"]]  # type: ignore[attr-defined]
    assert len(seen) == len(set(seen)) == 45  # 44 failures and the sign-up, each once
    assert third["next"] is None
    assert not any(ip.startswith("10.9.9.") for ip in seen)


async def test_html_matches_json_and_show_more_appends(client: httpx.AsyncClient, app: Starlette) -> None:
    await signup(client)
    user = await User.find_one({"email": "ada@example.com"})
    assert user is not None
    for i in range(25):
        app.state.services.activity({"event": "login_failure", "user_id": str(user.id), "ip": f"10.0.0.{i}"})
    got = await events(app, client)
    page = (await client.get("/account/activity")).text
    assert re.findall(r'data-event="([a-z_]+)"', page) == [e["type"] for e in got["events"]]  # type: ignore[attr-defined]
    more = re.search(r'hx-get="(/account/activity\?before=[0-9a-f]+)"', page)
    assert more is not None and f'href="{more.group(1)}"' in page  # a plain link without JavaScript
    fragment = await client.get(more.group(1), headers=HX)
    assert "<html" not in fragment.text and fragment.text.count("data-event=") == 6


async def test_another_accounts_events_never_show(client: httpx.AsyncClient, app: Starlette) -> None:
    await signup(client)
    async with make_client(app) as grace:
        await signup(grace, email="grace@example.com")
        await login(grace, email="grace@example.com", password="wrong wrong wrong")
        mine = (await events(app, client))["events"]
        theirs = (await events(app, grace))["events"]
    assert [e["type"] for e in mine] == ["sign_up"]  # type: ignore[index]
    assert [e["type"] for e in theirs] == ["sign_in_failed", "sign_up"]  # type: ignore[index]


# -- deleting the account -----------------------------------------------------------------------


def keys_of(redis: Redis, user_id: str, email: str) -> list[str]:
    """Every Redis key that names the account (its tags, its id, its address's hash)."""
    marks = {user_tag(user_id), short_user_id(user_id), account_tag(email), account_tag(user_id)}
    return [k for k in redis.scan_iter("*") if any(m in k for m in marks)]


def assert_only_the_tombstone(redis: Redis, user_id: str, email: str) -> None:
    """After a deletion nothing names the account but its epoch, moved on, for 15 minutes; and
    the counts of mail and answers to its address, for the rest of their hour (making the account
    again must not start them afresh)."""
    address_counts = {f"t:{kind}:{{{account_tag(email)}}}" for kind in "mrs"}
    left = keys_of(redis, user_id, email)
    assert [k for k in left if k not in address_counts] == [epoch_key(user_id)]
    assert 0 < redis.ttl(epoch_key(user_id)) <= TOMBSTONE_TTL
    for key in set(left) & address_counts:  # counting an hour, then gone
        assert redis.ttl(key) > 0 and float(redis.hget(key, "w") or 0) <= time.time() + HOUR, key


async def test_deletion_removes_everything_and_the_address_can_sign_up_again(
    client: httpx.AsyncClient, app: Starlette, redis: Redis, smtp: MailServer
) -> None:
    await confirmed_signup(client, smtp)  # the goodbye goes only to a confirmed address
    user = await User.find_one({"email": "ada@example.com"})
    assert user is not None
    uid = str(user.id)
    async with make_client(app) as phone:
        await login(phone)
        await phone.post("/password/forgot", data={"email": "ada@example.com"})  # a token outstanding
        await login(phone, password="wrong once")  # throttle counters
        assert keys_of(redis, uid, "ada@example.com")
        # The sign-up's, the new-browser notice and the reset's.
        await smtp.wait_for(3, within=WITHIN)
        smtp.stop()  # mail waits in the queue...
        await phone.post("/password/forgot", data={"email": "ada@example.com"})
        assert (await client.post("/account/delete", data={"confirm": "not@mine.example"})).status_code == 422
        stolen = client.cookies["__Host-sid"]
        r = await client.post("/account/delete", data={"confirm": "Ada@Example.com"})
        assert r.status_code == 303 and r.headers["location"] == "/signup"
        assert "Your account was deleted" in (await client.get("/signup")).text
        assert (await phone.get("/")).status_code == 303
    assert_only_the_tombstone(redis, uid, "ada@example.com")
    assert await User.find_one({"email": "ada@example.com"}) is None
    assert await Event.find({"user_id": uid}).count() == 0
    async with make_client(app) as thief:
        thief.cookies.set("__Host-sid", stolen, domain="testserver.local")
        assert (await thief.get("/")).status_code == 303
    assert (
        await app.state.services.mail.queue.depth() == 1
    )  # the second reset link is gone; the goodbye waits
    smtp.start()
    await smtp.wait_for(4, within=WITHIN)
    subjects = [m.subject for m in smtp.received]
    assert (
        subjects[-1] == "Your account was deleted" and len([s for s in subjects if "reset" in s.lower()]) == 1
    )
    async with make_client(app) as again:
        assert (await signup(again)).status_code == 303


STEPS = [
    ("store", "end", RedisConnectionError("down"), 0),  # 1: the other sessions
    ("mail", "forget", RedisConnectionError("down"), 0),  # 2
    ("tokens", "delete_all", RedisConnectionError("down"), 0),
    ("throttle", "forget", RedisConnectionError("down"), 0),
    (activity, "forget", ConnectionFailure("down"), 0),
    ("store", "end", RedisConnectionError("down"), 1),  # 3: every session, index and epoch
    (User, "delete", ConnectionFailure("down"), 0),  # 4: the document
    ("store", "end", RedisConnectionError("down"), 2),  # 5: the sweep after it
]


@pytest.mark.parametrize(
    ("target", "name", "error", "nth"),
    STEPS,
    ids=[f"{t if isinstance(t, str) else t.__name__}.{n}#{i}" for t, n, _, i in STEPS],
)
async def test_a_deletion_that_fails_half_way_is_finished_by_a_retry(
    client: httpx.AsyncClient,
    app: Starlette,
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
    target: object,
    name: str,
    error: Exception,
    nth: int,
) -> None:
    """Each step fails once; afterwards no session names a deleted account, and the owner
    (signed in still, or signing in again) finishes the job by asking again."""
    await signup(client)
    user = await User.find_one({"email": "ada@example.com"})
    assert user is not None
    uid = str(user.id)
    owner = getattr(app.state.services, target) if isinstance(target, str) else target
    real = getattr(owner, name)
    calls = 0

    async def fails_once(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == nth + 1:
            raise error
        return await real(*args, **kwargs)

    monkeypatch.setattr(owner, name, fails_once)
    r = await client.post("/account/delete", data={"confirm": "ada@example.com"})
    assert r.status_code == 503
    monkeypatch.undo()
    if await User.find_one({"email": "ada@example.com"}) is None:  # the last step failed
        assert not [k for k in redis.scan_iter("s:*") if redis.hget(k, "u") == uid]
    else:
        if (await client.get("/")).status_code != 200:  # signed out already: sign in again
            assert (await login(client)).status_code == 303
        r = await client.post("/account/delete", data={"confirm": "ada@example.com"})
        assert r.status_code == 303 and r.headers["location"] == "/signup", r.text
    assert_only_the_tombstone(redis, uid, "ada@example.com")
    assert await User.find_one({"email": "ada@example.com"}) is None
    assert await Event.find({"user_id": uid}).count() == 0


async def test_requests_under_way_at_deletion_leave_no_activity_behind(
    client: httpx.AsyncClient, app: Starlette, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong-password sign-in has found the account when it is deleted; its failure is logged
    after the deletion has finished. Its event must not outlive the account (any worker may
    write it, so the deletion cannot simply wait for it)."""
    await signup(client)
    user = await User.find_one({"email": "ada@example.com"})
    assert user is not None
    uid = str(user.id)
    passwords = app.state.services.passwords
    checked, proceed = asyncio.Event(), asyncio.Event()
    real = passwords.verify

    async def held(*args: object, **kwargs: object) -> object:
        result = await real(*args, **kwargs)
        checked.set()
        await asyncio.wait_for(proceed.wait(), WITHIN)
        return result

    monkeypatch.setattr(passwords, "verify", held)
    async with make_client(app) as guesser:
        attempt = asyncio.create_task(login(guesser, password="a wrong guess"))
        await asyncio.wait_for(checked.wait(), WITHIN)
        monkeypatch.undo()
        assert (await client.post("/account/delete", data={"confirm": "ada@example.com"})).status_code == 303
        proceed.set()
        assert (await attempt).status_code == 401
    await app.state.services.activity.flush()
    assert await Event.find({"user_id": uid}).count() == 0


async def test_deletion_needs_a_recent_authentication(
    client: httpx.AsyncClient, app: Starlette, redis: Redis
) -> None:
    await signup(client)
    sid = app.state.services.signer.unsign(client.cookies["__Host-sid"])[0]
    from web.sessions.ids import digest

    redis.hset(f"s:{digest(sid)}", "t", int(time.time()) - 3600)
    r = await client.post("/account/delete", data={"confirm": "ada@example.com"})
    assert r.status_code == 303 and r.headers["location"].startswith("/reauth?next=")
    assert await User.find_one({"email": "ada@example.com"}) is not None


_ = deletion  # the module under test, exercised through the app
