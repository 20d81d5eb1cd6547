"""Redis behind Sentinel, on real processes: the URL, a client that follows failovers, WAIT.

The failover tests sign users in (a Lua write per sign-in, as the session store does) from a few
concurrent tasks, SIGKILL the master in the middle, and then check on the promoted replica that
every sign-in that was answered with success is still there. Run with -s to see the numbers.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import MasterNotFoundError
from redis.exceptions import ConnectionError, TimeoutError

from tests.helpers.sentinel import SERVICE, Failover, Topology, topology, wait_until
from web.sentinel import (
    MASTER_CHECK_S,
    MasterChangedError,
    MasterSSLConnection,
    SentinelUrl,
    connect_sentinel,
    parse_sentinel_url,
    run_and_wait,
)

pytestmark = pytest.mark.slow

# A sign-in reduced to what matters here: one key written by a script.
SCRIPT = "redis.call('SET', KEYS[1], ARGV[1]) return 1"
SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1
WAIT_MS = 200
WRITERS = 4
BEFORE_KILL = 300  # sign-ins that succeed before the master is killed
AFTER_FAILOVER = 8  # and after the sentinels agree on the new one (each waits WAIT_MS: no replica left)


# --- the URL ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "redis+sentinel://host1:26379,host2:26380/mymaster/0",
            SentinelUrl((("host1", 26379), ("host2", 26380)), "mymaster", 0),
        ),
        ("redis+sentinel://h/mymaster", SentinelUrl((("h", 26379),), "mymaster", 0)),
        ("redis+sentinel://h:1/mymaster/3/", SentinelUrl((("h", 1),), "mymaster", 3)),
        (
            "redis+sentinel://[::1]:5000,[fe80::1],10.0.0.1/svc",
            SentinelUrl((("::1", 5000), ("fe80::1", 26379), ("10.0.0.1", 26379)), "svc"),
        ),
        (
            "redis+sentinel://app:p%40ss%2Cw@h1,h2/my%20master/2",
            SentinelUrl((("h1", 26379), ("h2", 26379)), "my master", 2, username="app", password="p@ss,w"),
        ),
        ("redis+sentinel://:secret@h/m", SentinelUrl((("h", 26379),), "m", password="secret")),
        (
            "redis+sentinel://h/m?sentinel_username=sen&sentinel_password=s%26cret&socket_timeout=0.5",
            SentinelUrl(
                (("h", 26379),),
                "m",
                sentinel_username="sen",
                sentinel_password="s&cret",
                options={"socket_timeout": 0.5},
            ),
        ),
        (
            "redis+sentinels://h/m?ssl_ca_certs=/etc/ca.pem&ssl_check_hostname=false",
            SentinelUrl(
                (("h", 26379),),
                "m",
                ssl=True,
                options={"ssl_ca_certs": "/etc/ca.pem", "ssl_check_hostname": False},
            ),
        ),
    ],
)
def test_parse(raw: str, expected: SentinelUrl) -> None:
    assert parse_sentinel_url(raw) == expected


def test_parsed_passwords_stay_out_of_repr() -> None:
    url = parse_sentinel_url("redis+sentinel://u:data-secret@h/m?sentinel_password=sentinel-secret")
    assert "secret" not in repr(url)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("redis://h:6379/0", "scheme"),
        ("redis+sentinel:///mymaster", "no sentinel host"),
        ("redis+sentinel://h1,,h2/mymaster", "no host"),
        ("redis+sentinel://h:port/mymaster", "bad port"),
        ("redis+sentinel://h:0/mymaster", "bad port"),
        ("redis+sentinel://h:70000/mymaster", "bad port"),
        ("redis+sentinel://::1:26379/mymaster", "brackets"),
        ("redis+sentinel://[nope]:1/mymaster", "IPv6"),
        ("redis+sentinel://h", "no service name"),
        ("redis+sentinel://h/", "no service name"),
        ("redis+sentinel://h/mymaster/x", "database must be a number"),
        ("redis+sentinel://h/mymaster/0/1", "path must be"),
        ("redis+sentinel://h/m?db=1", "path"),
        ("redis+sentinel://h/m?ssl=true", r"redis\+sentinels://"),
        ("redis+sentinel://h/m?ssl_ca_certs=/ca.pem", "needs TLS"),
        ("redis+sentinel://h/m?bogus=1", "unknown option 'bogus'"),
        ("redis+sentinel://h/m?socket_timeout=soon", "socket_timeout"),
        ("redis+sentinel://h/m#frag", "fragment"),
    ],
)
def test_parse_rejects(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_sentinel_url(raw)


async def test_tls_reaches_the_sentinels_and_the_data_nodes() -> None:
    url = parse_sentinel_url("redis+sentinels://h1,h2/m/1?ssl_ca_certs=/ca.pem&sentinel_password=s")
    client = connect_sentinel(url)  # connects lazily: nothing listens on h1, h2
    pool: Any = client.connection_pool
    assert pool.connection_class is MasterSSLConnection
    assert pool.connection_kwargs["ssl_ca_certs"] == "/ca.pem"
    assert pool.connection_kwargs["db"] == 1
    for sentinel in pool.sentinel_manager.sentinels:
        assert issubclass(sentinel.connection_pool.connection_class, SSLConnection)
        assert sentinel.connection_pool.connection_kwargs["ssl_ca_certs"] == "/ca.pem"
        assert sentinel.connection_pool.connection_kwargs["password"] == "s"
        assert sentinel.connection_pool.connection_kwargs["retry"].get_retries() == 0
    await client.aclose()


# --- one topology that no test fails over ----------------------------------------------------


@pytest.fixture(scope="module")
def steady(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    with topology(tmp_path_factory.mktemp("sentinel")) as top:
        yield top


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Topology]:
    """A topology of its own, for a test that fails it over; checked to leave no process behind."""
    with topology(tmp_path) as top:
        yield top
    assert top.running_pids() == []


async def client_for(top: Topology, **options: object) -> Redis:
    return connect_sentinel(parse_sentinel_url(top.url()), **options)


@pytest.fixture
async def steady_client(steady: Topology) -> AsyncIterator[Redis]:
    client = await client_for(steady)
    yield client
    await client.aclose()


async def test_finds_the_master_writes_and_reads(steady: Topology, steady_client: Redis) -> None:
    assert await steady_client.set("greeting", "hello")
    assert await steady_client.get("greeting") == "hello"  # decoded, as with connect_redis
    assert steady_client.connection_pool.master_address == steady.master_address  # type: ignore[attr-defined]
    _, acked = await run_and_wait(steady_client, SHA, SCRIPT, ["k"], ["v"], replicas=1, timeout_ms=WAIT_MS)
    assert acked == 1
    with steady.data_client(steady.replica) as replica:
        assert replica.get("k") == "v"  # what WAIT acknowledged is on the replica


async def test_run_and_wait_runs_a_script_the_server_has_not_seen(
    steady: Topology, steady_client: Redis
) -> None:
    with steady.data_client(steady.master) as master:
        master.script_flush()
    assert await run_and_wait(steady_client, SHA, SCRIPT, ["k2"], ["v"], replicas=1, timeout_ms=WAIT_MS) == (
        1,
        1,
    )
    with steady.data_client(steady.master) as master:
        master.script_flush()
    assert await run_and_wait(steady_client, SHA, SCRIPT, ["k3"], ["v"], replicas=0, timeout_ms=WAIT_MS) == (
        1,
        0,
    )
    with steady.data_client(steady.master) as master:
        assert master.mget("k2", "k3") == ["v", "v"]


async def test_wait_timeout_must_end_before_the_socket_timeout(steady_client: Redis) -> None:
    for bad in (0, 800):  # WAIT n 0 blocks for ever; 800 ms + margin reaches the 1 s socket timeout
        with pytest.raises(ValueError, match="WAIT timeout"):
            await run_and_wait(steady_client, SHA, SCRIPT, ["k"], ["v"], replicas=1, timeout_ms=bad)


async def test_wait_counts_only_writes_made_on_its_own_connection(
    steady: Topology, steady_client: Redis
) -> None:
    """A WAIT sent on another pooled connection says the write is safe when no replica has it."""
    pool = steady_client.connection_pool
    other = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        # `other` is up to date: the replica has everything up to its last command.
        await other.send_command("WAIT", 1, 1000)
        assert await other.read_response() == 1
        steady.replica.process.send_signal(signal.SIGSTOP)  # the replica can acknowledge nothing now
        try:
            assert await steady_client.set("written-elsewhere", "1")  # on a connection other than `other`
            started = time.monotonic()
            await other.send_command("WAIT", 1, WAIT_MS)
            assert await other.read_response() == 1  # wrong: the replica is frozen
            assert time.monotonic() - started < WAIT_MS / 1000 / 2  # and it did not wait at all

            started = time.monotonic()
            _, acked = await run_and_wait(
                steady_client, SHA, SCRIPT, ["p"], ["1"], replicas=1, timeout_ms=WAIT_MS
            )
            assert acked == 0  # right: the pipelined WAIT waited for this write, in vain
            assert time.monotonic() - started >= 0.2
        finally:
            steady.replica.process.send_signal(signal.SIGCONT)
    finally:
        await pool.release(other)
    _, acked = await run_and_wait(steady_client, SHA, SCRIPT, ["p"], ["2"], replicas=1, timeout_ms=WAIT_MS)
    assert acked == 1


async def test_pool_waits_for_a_free_connection(steady: Topology) -> None:
    client = await client_for(steady, max_connections=2)
    try:
        assert await asyncio.gather(*(client.incr("counted") for _ in range(20)))
        assert int(await client.get("counted") or 0) >= 20
    finally:
        await client.aclose()


# --- failovers -------------------------------------------------------------------------------


@dataclass
class Attempt:
    key: str
    started: float
    ended: float
    acked: int | None = None  # None: the sign-in failed (a 503)
    error: Exception | None = None


@dataclass
class SignIns:
    """Sign-ins from WRITERS concurrent tasks until stopped, each one recorded."""

    client: Redis
    replicas: int
    attempts: list[Attempt] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    numbers: Iterator[int] = field(default_factory=itertools.count)

    async def writer(self) -> None:
        while not self.stop.is_set():
            key = f"session:{next(self.numbers)}"
            started = time.monotonic()
            try:
                _, acked = await run_and_wait(
                    self.client, SHA, SCRIPT, [key], ["1"], replicas=self.replicas, timeout_ms=WAIT_MS
                )
            except (ConnectionError, TimeoutError) as exc:  # what web/errors.py answers with a 503
                self.attempts.append(Attempt(key, started, time.monotonic(), error=exc))
                await asyncio.sleep(0.01)  # pacing, not waiting for anything: failures take ~1 ms
            else:
                self.attempts.append(Attempt(key, started, time.monotonic(), acked=acked))

    def succeeded(self, since: float = 0.0) -> list[Attempt]:
        return [a for a in self.attempts if a.acked is not None and a.started >= since]

    def failed(self) -> list[Attempt]:
        return [a for a in self.attempts if a.acked is None]


async def sign_in_through_failover(top: Topology, replicas: int) -> tuple[SignIns, Failover, float]:
    """Sign in users while the master is SIGKILLed; return them, the failover, and the kill time."""
    client = await client_for(top)
    sign_ins = SignIns(client, replicas)
    writers = [asyncio.create_task(sign_ins.writer()) for _ in range(WRITERS)]
    try:
        await wait_until(lambda: len(sign_ins.succeeded()) >= BEFORE_KILL, 10, "sign-ins before the kill")
        old = top.master_address
        killed = top.kill_master()
        failover = await top.wait_for_failover(old, killed)
        settled = killed + failover.all_seconds
        await wait_until(
            lambda: len(sign_ins.succeeded(settled)) >= AFTER_FAILOVER, 10, "sign-ins after the failover"
        )
    finally:
        sign_ins.stop.set()
        await asyncio.gather(*writers)
        await client.aclose()
    return sign_ins, failover, killed


def missing_on(top: Topology, attempts: list[Attempt]) -> list[str]:
    keys = [a.key for a in attempts]
    with top.data_client(top.master) as master:
        values = [v for i in range(0, len(keys), 500) for v in master.mget(keys[i : i + 500])]
    return [key for key, value in zip(keys, values, strict=True) if value is None]


def report(
    label: str, sign_ins: SignIns, failover: Failover, lost: int, lost_unacked: int, cause: str = "SIGKILL"
) -> None:
    ok = sign_ins.succeeded()
    print(
        f"\n{label}: N={len(ok)} sign-ins answered with success "
        f"({sum(1 for a in ok if a.acked)} acknowledged by a replica), "
        f"{len(sign_ins.failed())} answered 503; failover: first sentinel {failover.first_seconds:.2f} s, "
        f"all {failover.all_seconds:.2f} s after the {cause}; lost {lost} of {len(ok)} "
        f"({lost_unacked} of them unacknowledged)"
    )


async def test_no_acknowledged_sign_in_is_lost_when_the_master_is_killed(fresh: Topology) -> None:
    sign_ins, failover, killed = await sign_in_through_failover(fresh, replicas=1)
    ok = sign_ins.succeeded()
    acked = [a for a in ok if a.acked]
    lost_acked = missing_on(fresh, acked)
    lost = missing_on(fresh, ok)
    report("WAIT 1", sign_ins, failover, len(lost), len(lost) - len(lost_acked))
    assert lost_acked == []
    # 503s only while no master could be found: none once the sentinels had switched.
    assert [a for a in sign_ins.failed() if a.ended > killed + failover.all_seconds + 1.0] == []


async def test_without_wait_a_killed_master_can_lose_sign_ins(fresh: Topology) -> None:
    sign_ins, failover, killed = await sign_in_through_failover(fresh, replicas=0)
    lost = missing_on(fresh, sign_ins.succeeded())
    # The loss is reported, not asserted: on loopback it is 0 run after run. A SIGKILLed
    # process's socket buffers are still delivered by the kernel, and the master writes the
    # replication stream out with the replies, so what a client was told reached the replica.
    # Losses without WAIT need the host or the network to fail (or a lagging replica), which
    # processes on one machine cannot show.
    report("WAIT 0", sign_ins, failover, len(lost), len(lost))
    # Without WAIT the failover is followed just the same: 503s only until the sentinels agree.
    assert [a for a in sign_ins.failed() if a.ended > killed + failover.all_seconds + 1.0] == []


async def test_fails_fast_while_no_master_is_known_and_follows_the_failover(fresh: Topology) -> None:
    client = await client_for(fresh)
    try:
        assert await client.set("before", "1")
        old = fresh.master_address
        killed = fresh.kill_master()
        failover_task = asyncio.create_task(fresh.wait_for_failover(old, killed))
        errors: list[tuple[float, Exception]] = []
        while not failover_task.done():
            started = time.monotonic()
            try:
                await client.set("during", "1")
            except ConnectionError as exc:  # anything else (a TimeoutError) fails the test
                errors.append((time.monotonic() - started, exc))
                await asyncio.sleep(0.01)  # pacing only
        failover = failover_task.result()
        slowest = max((seconds for seconds, _ in errors), default=0.0)
        print(f"\n{len(errors)} commands failed during the failover, the slowest in {slowest:.3f} s")
        assert slowest < 2.0
        assert any(isinstance(exc, MasterNotFoundError) for _, exc in errors)  # between SDOWN and promotion

        # The same client, never recreated, now writes to the promoted replica.
        assert await client.set("after", "1")
        assert client.connection_pool.master_address == failover.new  # type: ignore[attr-defined]
        with fresh.data_client(fresh.master) as master:
            assert master.mget("before", "after") == ["1", "1"]

        # The old master comes back, empty and claiming to be a master until Sentinel demotes it:
        # the client must not write there (no sentinel names it, no connection to it survived).
        # Nothing should happen, so this can only watch for a while: two of the pool's master checks.
        returned = fresh.restart_old_master()
        deadline = time.monotonic() + 2 * MASTER_CHECK_S
        while time.monotonic() < deadline:
            await client.set("after-return", "1")
            await asyncio.sleep(0.01)  # pacing only
        with fresh.data_client(returned) as old_master:
            assert old_master.dbsize() == 0
    finally:
        await client.aclose()


async def test_manual_failover_stops_writes_to_the_old_master(fresh: Topology) -> None:
    """SENTINEL FAILOVER leaves the old master running, a master, for ~10 s until it is demoted.

    Plain redis-py would go on writing to it on its warm connections, all lost. This client asks
    the sentinels every MASTER_CHECK_S, and a write WAIT could not confirm raises once it can tell
    that the master moved.
    """
    client = await client_for(fresh)
    sign_ins = SignIns(client, replicas=1)
    writers = [asyncio.create_task(sign_ins.writer()) for _ in range(WRITERS)]
    try:
        await wait_until(lambda: len(sign_ins.succeeded()) >= BEFORE_KILL, 10, "sign-ins before the failover")
        old = fresh.master_address
        asked = time.monotonic()
        with fresh.data_client(fresh.sentinels[0]) as sentinel:
            assert sentinel.execute_command("SENTINEL", "FAILOVER", SERVICE)
        failover = await fresh.wait_for_failover(old, asked)
        settled = asked + failover.all_seconds
        await wait_until(lambda: len(sign_ins.succeeded(settled)) >= AFTER_FAILOVER, 10, "sign-ins after")
    finally:
        sign_ins.stop.set()
        await asyncio.gather(*writers)
        await client.aclose()
    ok = sign_ins.succeeded()
    lost = missing_on(fresh, ok)
    lost_acked = missing_on(fresh, [a for a in ok if a.acked])
    late = missing_on(fresh, sign_ins.succeeded(settled + MASTER_CHECK_S))
    changed = [a for a in sign_ins.failed() if isinstance(a.error, MasterChangedError)]
    report("SENTINEL FAILOVER, WAIT 1", sign_ins, failover, len(lost), len(lost) - len(lost_acked), "request")
    print(f"{len(changed)} writes answered 503 because the master had moved")
    assert lost_acked == []
    assert late == []  # once the client has had the time to notice, nothing goes to the old master
