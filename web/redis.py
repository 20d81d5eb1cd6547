"""The Redis client: connecting (single server, Cluster), and Lua scripts that survive NOSCRIPT."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError

RedisClient = Redis | RedisCluster
log = logging.getLogger(__name__)

# Short timeouts: when Redis is down, the user hears so within about a second.
TIMEOUT_S = 1.0
POOL_SIZE = 100


class Pool(BlockingConnectionPool):
    """redis-py's blocking pool, with a fast lane for the usual case.

    On every command redis-py's get_connection() and release() take an asyncio.Condition, arm a
    timer for the wait, bind their arguments to warn about deprecated ones, dispatch events and
    record metrics for OpenTelemetry: a quarter of a signed-in page's Redis call. None of that is
    needed when a connection is idle and nobody is waiting for one: asyncio runs the lines
    between two awaits without interruption. Otherwise the base class waits, and wakes waiters.
    """

    waiting = 0  # callers inside the base class's get_connection()

    async def get_connection(self) -> AbstractConnection:  # type: ignore[override]
        if self._available_connections and not self.waiting and not self._in_maintenance:
            connection = self._available_connections.pop()
            self._in_use_connections.add(connection)
            try:
                await self.ensure_connection(connection)  # reconnects one that Redis closed
            except BaseException:
                await self.release(connection)
                raise
            return connection
        self.waiting += 1
        try:
            # Undecorated: the same code without the per-call deprecation check.
            return await BlockingConnectionPool.get_connection.__wrapped__(self)  # type: ignore[attr-defined,no-any-return]
        finally:
            self.waiting -= 1

    async def release(self, connection: AbstractConnection) -> None:
        if self.waiting or self._in_maintenance:
            await super().release(connection)  # under the Condition, notifying a waiter
            return
        self._in_use_connections.remove(connection)
        if connection.should_reconnect():  # type: ignore[no-untyped-call]
            await connection.disconnect()
        self._available_connections.append(connection)


def connect_redis(url: str, *, cluster: bool) -> RedisClient:
    """A client for REDIS_URL: a pool of decoded-reply connections that fail fast."""
    if url.startswith("redis+sentinel"):
        from web.sentinel import connect_sentinel, parse_sentinel_url  # builds on this module

        return connect_sentinel(parse_sentinel_url(url))
    # One quick retry: the first command after a Redis restart meets a dead pooled connection.
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": TIMEOUT_S / 2,
        "socket_timeout": TIMEOUT_S,
        "retry": Retry(NoBackoff(), 1),
    }
    if cluster:
        return RedisCluster.from_url(url, max_connections=POOL_SIZE, **options)
    pool = Pool.from_url(url, max_connections=POOL_SIZE, timeout=TIMEOUT_S, **options)
    return Redis(connection_pool=pool)


class Script:
    """A Lua script run by its SHA, sent whole (EVAL) to a server that has not seen it yet.

    redis-py's own Script answers NOSCRIPT with SCRIPT LOAD, which a cluster client sends to
    every master: one master down would then fail requests for keys on the others too.
    EVAL goes only to the master that owns the key, and caches the script there.
    """

    def __init__(self, redis: RedisClient, source: str, *, replicas: int = 0, timeout_ms: int = 500) -> None:
        self.redis = redis
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1
        # Writes that must survive a failover wait until this many replicas have them.
        self.replicas = replicas
        self.timeout_ms = timeout_ms

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        if self.replicas and isinstance(self.redis, Redis):
            from web.sentinel import run_and_wait  # builds on this module

            result, acked = await run_and_wait(
                self.redis,
                self.sha,
                self.source,
                keys,
                args,
                replicas=self.replicas,
                timeout_ms=self.timeout_ms,
            )
            if acked < self.replicas:
                # Written, but on fewer replicas than asked: a failover now could lose it.
                log.warning(
                    "WAIT: %d of %d replicas had the write within %d ms",
                    acked,
                    self.replicas,
                    self.timeout_ms,
                )
            return result
        try:
            return await self.redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.redis.eval(self.source, len(keys), *keys, *args)
