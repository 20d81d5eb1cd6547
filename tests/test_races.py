"""Security promises under concurrency: requests that arrive between two steps of another.

Each race is forced, not hoped for: a gate holds the racing requests at the worst moment
(after they have read what the other request is about to change) until the other request
has finished, and the test runs several rounds. These tests fail on the code before the
credential epoch, targeted writes and reserved throttling.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import httpx
import pytest
from redis import Redis
from starlette.applications import Starlette

from tests.conftest import PASSWORD, login, make_client, running, signup
from web.auth.users import User
from web.settings import Settings

ROUNDS = 10
NEW_PASSWORD = "a brand new passphrase"
CHANGE = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
WITHIN = 10.0  # seconds: the bound on every wait here

racing: contextvars.ContextVar[bool] = contextvars.ContextVar("racing", default=False)


class Gate:
    """Holds racing requests at one point until released; knows when `expected` have arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.arrived = 0
        self.all_here = asyncio.Event()
        self.open = asyncio.Event()

    async def hold(self) -> None:
        if not racing.get():
            return  # the request the others race against passes freely
        self.arrived += 1
        if self.arrived >= self.expected:
            self.all_here.set()
        await asyncio.wait_for(self.open.wait(), WITHIN)

    async def wait_for_all(self) -> None:
        await asyncio.wait_for(self.all_here.wait(), WITHIN)


def gate_after(target: Any, name: str, gate: Gate, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `target.name` (an async function) stop at the gate once it has returned its result."""
    real: Callable[..., Awaitable[Any]] = getattr(target, name)

    async def gated(*args: Any, **kwargs: Any) -> Any:
        result = await real(*args, **kwargs)
        await gate.hold()
        return result

    monkeypatch.setattr(target, name, gated)


def gate_before(target: Any, name: str, gate: Gate, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `target.name` wait at the gate before it runs."""
    real: Callable[..., Awaitable[Any]] = getattr(target, name)

    async def gated(*args: Any, **kwargs: Any) -> Any:
        await gate.hold()
        return await real(*args, **kwargs)

    monkeypatch.setattr(target, name, gated)


async def race(requests: list[Coroutine[Any, Any, httpx.Response]]) -> list[asyncio.Task[httpx.Response]]:
    """Start the racing requests, each in its own task marked as racing."""

    async def marked(request: Coroutine[Any, Any, httpx.Response]) -> httpx.Response:
        racing.set(True)
        return await request

    return [asyncio.create_task(marked(r)) for r in requests]


def user_session_keys(redis: Redis, email_user_id: str) -> list[str]:
    """Every session key in Redis that belongs to this user."""
    return [k for k in redis.scan_iter("s:*") if redis.hget(k, "u") == email_user_id]


async def held_sign_ins(
    app: Starlette,
    monkeypatch: pytest.MonkeyPatch,
    email: str,
    attackers: int,
    owners_move: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]],
) -> tuple[str, httpx.AsyncClient, list[httpx.AsyncClient], list[int]]:
    """Sign-ins with the right password, every one held after its check (before its session),
    while the owner makes a move; returns the user id, the owner's and attackers' clients (open,
    for the caller to look through and close) and the sign-ins' statuses."""
    owner = make_client(app)
    assert (await signup(owner, email=email)).status_code == 303
    user = await User.find_one({"email": email})
    assert user is not None
    gate = Gate(attackers)
    gate_after(app.state.services.passwords, "verify", gate, monkeypatch)
    clients = [make_client(app) for _ in range(attackers)]
    tasks = await race([login(c, email=email) for c in clients])
    await gate.wait_for_all()
    assert (await owners_move(owner)).status_code == 303
    gate.open.set()
    codes = [r.status_code for r in await asyncio.gather(*tasks)]
    monkeypatch.undo()
    assert set(codes) <= {303, 401}
    return str(user.id), owner, clients, codes


async def signed_out_everywhere(clients: list[httpx.AsyncClient], context: object) -> None:
    """Every attacker's cookie is worthless; the clients are closed."""
    for c in clients:
        assert (await c.get("/")).status_code == 303, context
        await c.aclose()


async def test_sign_ins_in_flight_never_outlive_a_password_change(
    app: Starlette, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attackers with the old password are past the hash lookup when the owner changes it."""
    for n in range(ROUNDS):
        user_id, owner, clients, codes = await held_sign_ins(
            app, monkeypatch, f"victim{n}@example.com", 8, lambda o: o.post("/account/password", data=CHANGE)
        )
        # Only the owner's session is left: in Redis, and as each cookie sees it.
        assert len(user_session_keys(redis, user_id)) == 1, (n, codes)
        assert (await owner.get("/")).status_code == 200
        await owner.aclose()
        await signed_out_everywhere(clients, (n, codes))


async def test_sign_ins_in_flight_never_outlive_the_deletion_of_the_account(
    app: Starlette, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same, when the owner deletes the account: no session may name it afterwards."""
    for n in range(ROUNDS):
        email = f"leaving{n}@example.com"
        user_id, owner, clients, codes = await held_sign_ins(
            app, monkeypatch, email, 4, lambda o, e=email: o.post("/account/delete", data={"confirm": e})
        )
        await owner.aclose()
        assert user_session_keys(redis, user_id) == [], (n, codes)
        await signed_out_everywhere(clients, (n, codes))


async def test_sign_ins_racing_a_password_change_freely(app: Starlette, redis: Redis) -> None:
    """No gate: sign-ins started around a password change, in many interleavings."""
    for n in range(ROUNDS):
        email = f"free{n}@example.com"
        async with make_client(app) as owner:
            await signup(owner, email=email)
            user = await User.find_one({"email": email})
            assert user is not None
            clients = [make_client(app) for _ in range(8)]
            attempts = [asyncio.create_task(login(c, email=email)) for c in clients[:4]]
            change = asyncio.create_task(owner.post("/account/password", data=CHANGE))
            attempts += [asyncio.create_task(login(c, email=email)) for c in clients[4:]]
            assert (await change).status_code == 303
            await asyncio.gather(*attempts)
            assert len(user_session_keys(redis, str(user.id))) == 1, n
            for c in clients:
                assert (await c.get("/")).status_code == 303
                await c.aclose()


async def test_profile_saves_during_a_password_change_never_restore_the_old_password(
    app: Starlette, monkeypatch: pytest.MonkeyPatch
) -> None:
    devices = 4
    for n in range(ROUNDS):
        email = f"profile{n}@example.com"
        clients = [make_client(app) for _ in range(devices + 1)]
        owner, others = clients[0], clients[1:]
        await signup(owner, email=email)
        for c in others:
            assert (await login(c, email=email)).status_code == 303
        gate = Gate(devices)
        # Each profile save stops right after loading the user (with the old password hash).
        gate_after(User, "get", gate, monkeypatch)
        name = {"first_name": "Ada", "last_name": f"L{n}"}
        saves = await race([c.post("/account/profile", data=name) for c in others])
        await gate.wait_for_all()
        assert (await owner.post("/account/password", data=CHANGE)).status_code == 303
        gate.open.set()
        await asyncio.gather(*saves)
        monkeypatch.undo()
        async with make_client(app) as check:
            assert (await login(check, email=email, password=PASSWORD)).status_code == 401, n
            assert (await login(check, email=email, password=NEW_PASSWORD)).status_code == 303, n
        for c in clients:
            await c.aclose()


async def test_a_burst_of_guesses_gets_no_more_checks_than_the_limit(app: Starlette) -> None:
    for n in range(ROUNDS):
        email = f"burst{n}@example.com"
        async with make_client(app) as owner:
            await signup(owner, email=email)
        async with make_client(app) as attacker:
            guesses = [login(attacker, email=email, password=f"guess number {i}") for i in range(30)]
            responses = await asyncio.gather(*guesses, login(attacker, email=email))
            codes = [r.status_code for r in responses]
            # Wrong guesses checked: at most the limit. The right one, if it got a place, gives
            # it back on success (another guess may take it): it is not a wrong guess.
            assert codes.count(401) <= 10, (n, codes)
            assert codes.count(303) <= 1 and codes.count(401) + codes.count(303) + codes.count(429) == 31, (
                codes
            )
            assert all(r.headers.get("retry-after") for r in responses if r.status_code == 429)
            if codes[-1] == 429:  # the right guess came too late: it must not have cleared the lock
                assert (await login(attacker, email=email)).status_code == 429, (n, codes)


async def test_sign_ups_for_a_taken_address_cost_no_hashing_and_are_limited(
    app: Starlette, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_client(app) as owner:
        await signup(owner)
    hashed: list[str] = []
    passwords = app.state.services.passwords
    real_hash = passwords.hash

    async def counting_hash(password: str) -> str:
        hashed.append(password)
        return str(await real_hash(password))

    monkeypatch.setattr(passwords, "hash", counting_hash)
    async with make_client(app) as prober:
        responses = await asyncio.gather(*(signup(prober, first=f"P{i}") for i in range(40)))
    codes = [r.status_code for r in responses]
    assert codes.count(429) > len(codes) // 2, codes
    assert set(codes) <= {409, 429}
    assert hashed == []
    assert await User.count() == 1


async def test_the_owner_changes_the_password_while_an_attacker_has_locked_sign_ins(app: Starlette) -> None:
    async with make_client(app) as victim, make_client(app) as attacker:
        await signup(victim)
        for _ in range(10):
            await login(attacker, password="wrong guess here")
        assert (await login(attacker)).status_code == 429
        r = await victim.post("/account/password", data=CHANGE)
        assert r.status_code == 303, r.text
        # ...and signs in again from the browser the account is known on, lock or not.
        await victim.post("/logout")
        assert (await login(victim, password=NEW_PASSWORD)).status_code == 303


async def test_guessing_from_many_addresses_never_locks_out_the_owners_browser(settings: Settings) -> None:
    import ipaddress

    proxy = (ipaddress.ip_network("127.0.0.1/32"),)
    async with (
        running(settings, trusted_proxies=proxy, login_account_max_failures=20) as app,
        make_client(app) as owner,
        make_client(app) as botnet,
        make_client(app) as stranger,
    ):
        await signup(owner)
        await owner.post("/logout")
        for i in range(25):  # five guesses from each of five addresses: under each one's limit
            address = {"X-Forwarded-For": f"198.51.100.{i % 5 + 1}"}
            await login(botnet, password=f"guess {i} here", headers=address)
        # The account-wide ceiling now stops browsers the account has never used...
        r = await login(stranger, headers={"X-Forwarded-For": "203.0.113.9"})
        assert r.status_code == 429
        # ...but not the owner's.
        assert (await login(owner)).status_code == 303


async def test_a_session_revoked_while_its_password_change_completes_stays_revoked(
    app: Starlette, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The change has claimed the epoch (it will go through) when the owner, in another browser,
    ends that browser's session. Renewing the session's id must then fail, not bring it back
    under a new id; and as the password did change, every session ends."""
    from tests.test_sessions_list import other_handle

    for n in range(ROUNDS):
        email = f"renewed{n}@example.com"
        async with make_client(app) as taker, make_client(app) as owner:
            assert (await signup(taker, email=email)).status_code == 303
            assert (await login(owner, email=email)).status_code == 303
            user = await User.find_one({"email": email})
            assert user is not None
            handle = other_handle((await owner.get("/sessions")).text)
            gate = Gate(1)
            gate_after(app.state.services.store, "claim", gate, monkeypatch)
            (change,) = await race([taker.post("/account/password", data=CHANGE)])
            await gate.wait_for_all()
            assert (await owner.post(f"/sessions/{handle}/revoke")).status_code == 303
            gate.open.set()
            assert (await change).status_code == 303, n
            monkeypatch.undo()
            assert (await taker.get("/")).status_code == 303, n
            assert user_session_keys(redis, str(user.id)) == [], n
            async with make_client(app) as check:
                assert (await login(check, email=email, password=NEW_PASSWORD)).status_code == 303, n
