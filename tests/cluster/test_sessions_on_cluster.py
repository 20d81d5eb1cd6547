"""The session and sign-in tests, unchanged, on a 3-master Redis Cluster."""

from __future__ import annotations

import httpx

from tests.conftest import signup
from tests.test_auth_account import *  # noqa: F403
from tests.test_auth_login import *  # noqa: F403
from tests.test_sessions_concurrency import *  # noqa: F403
from tests.test_sessions_lifecycle import *  # noqa: F403
from tests.test_sessions_list import *  # noqa: F403
from tests.test_sessions_middleware import *  # noqa: F403


async def test_app_uses_the_cluster_client(client: httpx.AsyncClient, app) -> None:  # type: ignore[no-untyped-def]
    from redis.asyncio.cluster import RedisCluster as AsyncCluster

    assert isinstance(app.state.services.redis, AsyncCluster)
    assert (await signup(client)).status_code == 303
