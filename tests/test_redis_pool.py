"""The Redis connection pool (web/redis.py): its fast lane serves callers beyond its size, and
the script calls of one turn of the event loop share one pipeline without mixing up replies."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import DataError, ResponseError

import web.redis
from web.errors import REDIS_DOWN
from web.redis import POOL_SIZE, Pool, Script, connect_redis
from web.settings import Settings


async def test_pool_wakes_every_caller_beyond_its_size(settings: Settings) -> None:
    """Three times as many commands at once as the pool has connections, five times over: every
    one is answered (the pool's fast lane must hand connections back to the callers waiting for
    one, or they time out after a second), and every connection is idle again afterwards."""
    assert settings.redis_url
    client = connect_redis(settings.redis_url, cluster=False)
    assert isinstance(client, Redis)
    pool = client.connection_pool
    assert isinstance(pool, Pool)
    try:
        for round_ in range(5):
            key = f"pool-test-{round_}"
            async with asyncio.timeout(10):
                counts = await asyncio.gather(*(client.incr(key) for _ in range(3 * POOL_SIZE)))
            assert sorted(counts) == list(range(1, 3 * POOL_SIZE + 1))
            assert (pool.waiting, len(pool._in_use_connections), len(pool._available_connections)) == (
                0,
                0,
                POOL_SIZE,
            )
            await client.delete(key)
    finally:
        await client.aclose()


# -- the pipelining of one turn (Batcher) ----------------------------------------------------

ECHO = "if KEYS[1] == 'bad' then return redis.error_reply('bad key') end return redis.call('GET', KEYS[1])"


def connected(pool: Pool) -> int:
    return sum(c.is_connected for c in [*pool._available_connections, *pool._in_use_connections])


async def test_script_calls_of_one_turn_share_a_connection_and_each_gets_its_own_reply(
    settings: Settings, redis: SyncRedis
) -> None:
    """Callers at once: one connection carries them all, MAX_BATCH to a write (redis-py alone
    opens one per caller), and each caller gets the value of its own key, not a neighbour's."""
    assert settings.redis_url
    redis.mset({f"k{i}": f"v{i}" for i in range(200)})
    client = connect_redis(settings.redis_url, cluster=False)
    assert isinstance(client, Redis) and isinstance(client.connection_pool, Pool)
    script = Script(client, ECHO)
    try:
        # 50 callers: four writes (16 + 16 + 16 + 2). 200: thirteen, on the same connection.
        for callers in (50, 50, 200):
            async with asyncio.timeout(10):
                replies = await asyncio.gather(*(script([f"k{i}"], []) for i in range(callers)))
            assert replies == [f"v{i}" for i in range(callers)]
            assert connected(client.connection_pool) == 1
    finally:
        await client.aclose()


async def test_the_pipeline_moves_to_another_connection_without_losing_a_reply(
    settings: Settings, redis: SyncRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a connection lifetime of zero, every turn's commands start the next connection while
    the last one still has replies to read: 300 turns of 20 callers, a few giving up on the way,
    and each caller still gets its own key's value; the connections handed back are reused."""
    assert settings.redis_url
    monkeypatch.setattr(web.redis, "PIPE_LIFETIME_S", 0.0)
    redis.mset({f"k{i}": f"v{i}" for i in range(20)})
    client = connect_redis(settings.redis_url, cluster=False)
    assert isinstance(client, Redis) and isinstance(client.connection_pool, Pool)
    pool = client.connection_pool
    script = Script(client, ECHO)
    pipes = set()
    try:
        for turn in range(300):
            calls = [asyncio.ensure_future(script([f"k{i}"], [])) for i in range(20)]
            if turn % 7 == 0:
                await asyncio.sleep(0)  # every call is queued for this turn's batch
                calls[turn % 20].cancel()
            async with asyncio.timeout(10):
                replies = await asyncio.gather(*calls, return_exceptions=True)
            for i, reply in enumerate(replies):
                assert reply == f"v{i}" or (turn % 7 == 0 and i == turn % 20), (turn, i, reply)
            pipes.add(id(pool.batcher.pipe))
        assert len(pipes) > 50
        async with asyncio.timeout(10):
            while pool.batcher.tasks:  # the last successor opened, the one before it handed back
                await asyncio.gather(*pool.batcher.tasks)
        assert len(pool._in_use_connections) == 1  # the pipe's own
        assert connected(pool) <= 3
    finally:
        await client.aclose()


async def test_an_error_reply_reaches_only_its_caller(settings: Settings, redis: SyncRedis) -> None:
    """A script error, and NOSCRIPT after SCRIPT FLUSH, in the middle of a batch: the failing
    call raises, the others are answered, and the replies after it are not shifted."""
    assert settings.redis_url
    redis.mset({f"k{i}": f"v{i}" for i in range(10)})
    client = connect_redis(settings.redis_url, cluster=False)
    script = Script(client, ECHO)
    try:
        for flush in (False, True):
            if flush:
                redis.script_flush()  # every call of the batch gets NOSCRIPT and falls back to EVAL
            keys = [*(f"k{i}" for i in range(5)), "bad", *(f"k{i}" for i in range(5, 10))]
            async with asyncio.timeout(10):
                replies = await asyncio.gather(*(script([k], []) for k in keys), return_exceptions=True)
            assert isinstance(replies[5], ResponseError) and "bad key" in str(replies[5])
            assert replies[:5] + replies[6:] == [f"v{i}" for i in range(10)]
    finally:
        await client.aclose()


async def test_a_broken_connection_is_tried_once_more(
    settings: Settings, redis: SyncRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis closed the pooled connection (a restart, a timeout on its side) after the pool
    handed it out: the batch goes out again on a new connection instead of failing its callers."""
    assert settings.redis_url
    redis.set("k", "v")
    client = connect_redis(settings.redis_url, cluster=False)
    assert isinstance(client, Redis) and isinstance(client.connection_pool, Pool)

    async def as_it_is(connection: object) -> None:  # no check on the way out: the write finds it
        return None

    monkeypatch.setattr(client.connection_pool, "ensure_connection", as_it_is)
    script = Script(client, ECHO)
    try:
        for _ in range(3):
            assert await script(["k"], []) == "v"
            assert redis.client_kill_filter(_type="normal", skipme=True) >= 1
            async with asyncio.timeout(10):
                assert await asyncio.gather(*(script(["k"], []) for _ in range(5))) == ["v"] * 5
    finally:
        await client.aclose()


async def test_a_caller_that_gives_up_leaves_the_others_their_replies(
    settings: Settings, redis: SyncRedis
) -> None:
    """A request cancelled while its command is on the way: its reply is read and dropped, so the
    connection's next replies still go to the right callers."""
    assert settings.redis_url
    redis.mset({f"k{i}": f"v{i}" for i in range(6)})
    client = connect_redis(settings.redis_url, cluster=False)
    script = Script(client, ECHO)
    try:
        for _ in range(5):
            calls = [asyncio.ensure_future(script([f"k{i}"], [])) for i in range(6)]
            await asyncio.sleep(0)  # every call is queued for this turn's batch
            calls[2].cancel()
            async with asyncio.timeout(10):
                replies = await asyncio.gather(*calls, return_exceptions=True)
            assert isinstance(replies[2], asyncio.CancelledError)
            assert replies[:2] + replies[3:] == ["v0", "v1", "v3", "v4", "v5"]
            assert await script(["k5"], []) == "v5"
    finally:
        await client.aclose()


async def test_a_redis_that_stops_answering_fails_its_callers_in_time_as_an_outage(
    settings: Settings, redis: SyncRedis
) -> None:
    """Redis accepts commands but answers none for 3 s (CLIENT PAUSE): the callers get an error
    the app shows as an outage (503) within the timeouts, about 1 s and the one retry, not
    after 3 s; and the late replies, once Redis answers again, go to nobody."""
    assert settings.redis_url
    redis.mset({f"k{i}": f"v{i}" for i in range(5)})
    client = connect_redis(settings.redis_url, cluster=False)
    script = Script(client, ECHO)
    try:
        assert await script(["k0"], []) == "v0"  # the script is loaded: EVALSHA alone pauses
        redis.client_pause(3000, all=True)
        started = time.monotonic()
        async with asyncio.timeout(10):
            replies = await asyncio.gather(*(script([f"k{i}"], []) for i in range(5)), return_exceptions=True)
        elapsed = time.monotonic() - started
        assert all(isinstance(r, REDIS_DOWN) for r in replies), replies
        assert elapsed < 2.8, elapsed
        async with asyncio.timeout(10):
            while True:  # until the pause is over
                try:
                    again = await asyncio.gather(*(script([f"k{i}"], []) for i in range(5)))
                    break
                except REDIS_DOWN:
                    continue
        assert again == [f"v{i}" for i in range(5)]
    finally:
        redis.client_unpause()
        await client.aclose()


async def test_an_argument_redis_cannot_take_fails_only_its_caller(
    settings: Settings, redis: SyncRedis
) -> None:
    """A None among the arguments (a caller's bug) in the middle of a batch: that call raises
    redis-py's DataError, as it would alone, and the calls around it are answered."""
    assert settings.redis_url
    redis.mset({"k0": "v0", "k2": "v2"})
    client = connect_redis(settings.redis_url, cluster=False)
    script = Script(client, ECHO)
    try:
        async with asyncio.timeout(10):
            replies = await asyncio.gather(
                script(["k0"], []), script(["k1"], [None]), script(["k2"], []), return_exceptions=True
            )
        assert replies[0] == "v0" and replies[2] == "v2"
        assert isinstance(replies[1], DataError)
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "args",
    [
        ("EVALSHA", "a" * 40, 1, "s:{abcd}x", 1764547200123, 0),
        ("EVAL", "return 1", 0),
        ("EVALSHA", "b" * 40, 2, "é ünïcode", b"\xff\x00raw", -7, 1.5, 10**20, ""),
    ],
)
def test_the_batcher_writes_each_command_as_redis_py_would(args: tuple[object, ...]) -> None:
    """Its own packer (under half of redis-py's time) writes the same bytes, and refuses what
    redis-py refuses with the same error."""
    pool = Pool.from_url("redis://127.0.0.1:1/0", decode_responses=True)
    theirs = b"".join(pool.make_connection().pack_command(*args))
    assert pool.batcher.pack(args) == theirs
    for bad in (None, True, object()):
        with pytest.raises(DataError, match=type(bad).__name__):
            pool.batcher.pack((*args, bad))
