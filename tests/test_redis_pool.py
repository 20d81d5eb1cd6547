"""The Redis connection pool's fast lane (web/redis.py): callers beyond its size still get served."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from web.redis import POOL_SIZE, Pool, connect_redis
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
