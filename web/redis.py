"""The Redis client: connecting (single server, Cluster), and Lua scripts that survive NOSCRIPT."""

from __future__ import annotations

import hashlib
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError

RedisClient = Redis | RedisCluster

# Short timeouts: when Redis is down, the user hears so within about a second.
TIMEOUT_S = 1.0
POOL_SIZE = 100


def connect_redis(url: str, *, cluster: bool) -> RedisClient:
    """A client for REDIS_URL: a pool of decoded-reply connections that fail fast."""
    # One quick retry: the first command after a Redis restart meets a dead pooled connection.
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": TIMEOUT_S / 2,
        "socket_timeout": TIMEOUT_S,
        "retry": Retry(NoBackoff(), 1),
    }
    if cluster:
        return RedisCluster.from_url(url, max_connections=POOL_SIZE, **options)
    pool = BlockingConnectionPool.from_url(url, max_connections=POOL_SIZE, timeout=TIMEOUT_S, **options)
    return Redis(connection_pool=pool)


class Script:
    """A Lua script run by its SHA, sent whole (EVAL) to a server that has not seen it yet.

    redis-py's own Script answers NOSCRIPT with SCRIPT LOAD, which a cluster client sends to
    every master: one master down would then fail requests for keys on the others too.
    EVAL goes only to the master that owns the key, and caches the script there.
    """

    def __init__(self, redis: RedisClient, source: str) -> None:
        self.redis = redis
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self.redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.redis.eval(self.source, len(keys), *keys, *args)
