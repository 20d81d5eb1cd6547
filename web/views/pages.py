"""The home page and the health check."""

from __future__ import annotations

import asyncio

from redis.asyncio.cluster import RedisCluster
from starlette.requests import Request
from starlette.responses import Response

from web.errors import outage
from web.forms import take_flash
from web.guard import SignedIn, signed_in
from web.htmx import json_reply
from web.services import services
from web.templating import render


@signed_in
async def home(request: Request, me: SignedIn) -> Response:
    return render(request, "pages/home.html", {"notice": take_flash(me.session)})


async def healthz(request: Request) -> Response:
    """200 when Redis and MongoDB both answer; otherwise 503 naming the one that does not."""
    svc = services(request)
    # On a cluster, every master must answer: each holds a share of the sessions.
    ping = (
        svc.redis.ping(target_nodes=RedisCluster.PRIMARIES)
        if isinstance(svc.redis, RedisCluster)
        else svc.redis.ping()
    )
    checks = {
        "redis": ping,
        "mongodb": svc.mongo.admin.command("ping"),
    }
    results = await asyncio.gather(*checks.values(), return_exceptions=True)
    report = {}
    for name, result in zip(checks, results, strict=True):
        if isinstance(result, BaseException) and not outage(result):
            raise result
        report[name] = "down" if isinstance(result, BaseException) else "ok"
    healthy = all(state == "ok" for state in report.values())
    return json_reply(report, 200 if healthy else 503)
