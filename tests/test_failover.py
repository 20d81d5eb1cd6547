"""The app on Redis Sentinel: sign in users while the master is SIGKILLed; afterwards every
sign-in that was answered with success is still signed in.

One master, one replica, three sentinels (tests/helpers/sentinel.py), all real processes.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from tests.conftest import login, make_client, running, signup
from tests.helpers.sentinel import Topology, topology, wait_until
from web.settings import Settings

pytestmark = pytest.mark.slow

USERS = 12
WRITERS = 6
BEFORE_KILL = 20  # sign-ins done before the master dies
AFTER_FAILOVER = 20  # ...and after the sentinels have named the new one


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Topology]:
    with topology(tmp_path) as top:
        yield top


@dataclass
class Run:
    app: Starlette
    ok: list[tuple[float, httpx.Cookies]] = field(default_factory=list)  # (answered at, cookies)
    unavailable: list[float] = field(default_factory=list)  # 503s, when
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    numbers: Iterator[int] = field(default_factory=itertools.count)

    async def writer(self) -> None:
        while not self.stop.is_set():
            n = next(self.numbers) % USERS
            async with make_client(self.app) as c:
                r = await login(c, email=f"user{n}@example.com")
                if r.status_code == 303:
                    self.ok.append((time.monotonic(), c.cookies))
                else:
                    assert r.status_code == 503, r.text  # Redis unavailable, and it says so
                    self.unavailable.append(time.monotonic())
                    await asyncio.sleep(0.01)  # pacing: a 503 takes a millisecond


async def sign_in_through_failover(
    settings: Settings, top: Topology, replicas: int
) -> tuple[Run, float, int]:
    """Sign in through a SIGKILL of the master; return the run, when the failover settled, and
    how many sign-ins answered with success are signed out afterwards."""
    changes = {"redis_url": top.url(), "redis_wait_replicas": replicas, "redis_wait_timeout_ms": 200}
    async with running(settings, **changes) as app:
        for n in range(USERS):
            async with make_client(app) as c:
                assert (await signup(c, email=f"user{n}@example.com")).status_code == 303
        run = Run(app)
        writers = [asyncio.create_task(run.writer()) for _ in range(WRITERS)]
        try:
            await wait_until(lambda: len(run.ok) >= BEFORE_KILL, 20, "sign-ins before the kill")
            old = top.master_address
            killed = top.kill_master()
            failover = await top.wait_for_failover(old, killed)
            settled = killed + failover.all_seconds
            await wait_until(lambda: sum(t > settled for t, _ in run.ok) >= AFTER_FAILOVER, 20, "after")
        finally:
            run.stop.set()
            await asyncio.gather(*writers)
        lost = 0
        for _, cookies in run.ok:
            async with make_client(app, cookies=cookies) as c:
                lost += (await c.get("/")).status_code != 200
        print(
            f"\nWAIT {replicas}: N={len(run.ok)} sign-ins answered 303, {len(run.unavailable)} answered 503; "
            f"failover {failover.first_seconds:.2f} s (first sentinel) / {failover.all_seconds:.2f} s (all); "
            f"signed out since: {lost} of {len(run.ok)}"
        )
        return run, settled, lost


async def test_no_sign_in_answered_with_success_is_lost_in_a_failover(
    settings: Settings, fresh: Topology
) -> None:
    run, settled, lost = await sign_in_through_failover(settings, fresh, replicas=1)
    assert lost == 0
    # 503s only while no master is known: none a second after every sentinel names the new one.
    assert not [t for t in run.unavailable if t > settled + 1.0]
    assert len(run.ok) >= BEFORE_KILL + AFTER_FAILOVER


async def test_without_wait_the_same_run_for_comparison(settings: Settings, fresh: Topology) -> None:
    # Reported, not asserted: on one machine a SIGKILLed master's replication stream still gets out
    # (the kernel delivers its socket buffers), so nothing is lost even without WAIT here.
    run, _, lost = await sign_in_through_failover(settings, fresh, replicas=0)
    assert len(run.ok) >= BEFORE_KILL + AFTER_FAILOVER
    assert lost <= len(run.ok)
