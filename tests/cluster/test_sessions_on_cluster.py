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
from web.auth.users import User


async def test_app_uses_the_cluster_client(client: httpx.AsyncClient, app) -> None:  # type: ignore[no-untyped-def]
    from redis.asyncio.cluster import RedisCluster as AsyncCluster

    assert isinstance(app.state.services.redis, AsyncCluster)
    assert (await signup(client)).status_code == 303


async def test_an_address_change_reads_and_claims_one_users_keys_on_the_cluster(
    client: httpx.AsyncClient,
    app,  # type: ignore[no-untyped-def]
) -> None:
    """The version and epoch are read together (MGET) and claimed in one script: one slot."""
    assert (await signup(client)).status_code == 303
    user = await User.find_one({"email": "ada@example.com"})
    assert user is not None
    store = app.state.services.store
    version, epoch = await store.version_and_epoch(str(user.id))
    assert await store.claim(str(user.id), version, epoch=epoch, move_version=False) == epoch + 1
    assert await store.version_and_epoch(str(user.id)) == (version, epoch + 1)
