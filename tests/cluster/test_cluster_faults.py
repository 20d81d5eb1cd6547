"""A master of the cluster restarts: only the sessions on it see 503s, and only while it is down."""

from __future__ import annotations

import time

import httpx
import pytest
from redis.cluster import RedisCluster
from starlette.applications import Starlette

from tests.cluster.conftest import Cluster, wait_for_cluster_ok
from tests.conftest import make_client, signup

pytestmark = pytest.mark.slow


async def test_master_restart_gives_503_only_for_its_own_sessions(
    app: Starlette, cluster: Cluster, redis: RedisCluster
) -> None:
    # Eight users: all the keys of one user share a slot (web/sessions/ids.py), users spread out.
    clients = [make_client(app) for _ in range(8)]
    for i, c in enumerate(clients):
        assert (await signup(c, email=f"user{i}@example.com")).status_code == 303
    svc = app.state.services
    port_of = {}
    for i, c in enumerate(clients):
        sid = svc.signer.unsign(c.cookies["__Host-sid"])[0]
        from web.sessions.ids import digest

        port_of[i] = redis.get_node_from_key(f"s:{digest(sid)}").port
    victim_port = max(set(port_of.values()), key=lambda p: list(port_of.values()).count(p))
    victim = next(i for i, n in enumerate(cluster.nodes) if n.port == victim_port)
    on_victim = {i for i, p in port_of.items() if p == victim_port}
    assert on_victim and len(on_victim) < len(clients)

    cluster.nodes[victim].stop()
    try:
        for i, c in enumerate(clients):
            started = time.monotonic()
            r = await c.get("/")
            if i in on_victim:
                assert r.status_code == 503, i
                assert r.headers["retry-after"] == "5"
            else:
                assert r.status_code == 200, i
            assert time.monotonic() - started < 3.0
    finally:
        cluster.restart(victim)
        wait_for_cluster_ok(victim_port)

    # Back, with its append-only file: every session is alive again, no restart of the app.
    deadline = time.monotonic() + 15
    codes: list[int] = []
    while time.monotonic() < deadline:
        codes = [(await c.get("/")).status_code for c in clients]
        if codes == [200] * len(clients):
            break
    assert codes == [200] * len(clients)
    for c in clients:
        await c.aclose()


async def test_health_check_names_the_cluster_when_a_master_is_down(
    client: httpx.AsyncClient, cluster: Cluster
) -> None:
    assert (await client.get("/healthz")).json() == {"redis": "ok", "mongodb": "ok"}
    port = cluster.nodes[2].port
    cluster.nodes[2].stop()
    try:
        r = await client.get("/healthz")
        assert r.status_code == 503 and r.json()["redis"] == "down"
    finally:
        cluster.restart(2)
        wait_for_cluster_ok(port)
    deadline = time.monotonic() + 15
    while (await client.get("/healthz")).status_code != 200 and time.monotonic() < deadline:
        pass
    assert (await client.get("/healthz")).status_code == 200
