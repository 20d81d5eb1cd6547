"""`python -m bench`: measure the app with wrk against real Redis and SecantusDB, print a table.

Everything runs on this machine: redis-server and SecantusDB (in memory), the app and the
ceiling (one uvicorn worker each), and wrk. Each figure is the median of --runs runs, and
the ratios are taken within a run, so that a noisy machine moves both sides together.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import bcrypt
import httpx
from redis import Redis

from bench import redis_probe, report, wrk
from bench.servers import Uvicorn, machine_cpu_seconds, own_cpu_seconds, serve
from web.embedded import Server, start_mongo, start_redis

RESULTS = Path(__file__).resolve().parent / "results"
PASSWORD = "bench passphrase, long enough"
ROUNDS = 12  # the app's default BCRYPT_ROUNDS


@dataclass
class Setup:
    app: Uvicorn
    ceiling: Uvicorn
    redis: Redis
    cookies: list[str]  # "sid=..." of signed-in browsing users, one session each
    logins: list[str]  # urlencoded sign-in forms of the users who keep signing in
    page_bytes: int  # a whole signed-in home page response, for checking what wrk received
    login_page_bytes: int


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs to take the median of (3)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per measurement (10)")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of load before each (3)")
    parser.add_argument("--connections", type=int, default=32, help="page-view connections (32)")
    parser.add_argument("--login-connections", type=int, default=8, help="sign-in connections (8)")
    parser.add_argument("--login-users", type=int, default=16, help="accounts the sign-ins rotate over")
    parser.add_argument(
        "--profile", action="store_true", help="also record a py-spy flamegraph of signed-in GET /"
    )
    return parser.parse_args(argv)


# -- bcrypt: the ceiling for sign-ins --------------------------------------------------------


def _checks_per_second(seconds: float) -> float:
    # A 44-byte input, like the app's keyed pre-hash of a password.
    password = base64.b64encode(hashlib.sha256(b"bench").digest())
    hashed = bcrypt.hashpw(password, bcrypt.gensalt(ROUNDS))
    start = now = time.perf_counter()
    checks = 0
    while now - start < seconds:
        bcrypt.checkpw(password, hashed)
        checks += 1
        now = time.perf_counter()
    return checks / (now - start)


def bcrypt_limit(seconds: float) -> float:
    """Password checks per second with every core busy: what sign-ins can reach at best."""
    cores = os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=cores) as pool:
        return sum(pool.map(_checks_per_second, [seconds] * cores))


# -- setting up: services, the two servers, accounts -----------------------------------------


def sign_up(base_url: str, n: int, kind: str) -> tuple[str, str]:
    """Create an account over HTTP; return its session cookie and its sign-in form."""
    email = f"bench-{kind}-{n}@example.com"
    form = {"first_name": "Bench", "last_name": f"User {n}", "email": email, "password": PASSWORD}
    reply = httpx.post(f"{base_url}/signup", data=form, timeout=30)
    if reply.status_code != 303 or "sid" not in reply.cookies:
        raise RuntimeError(f"sign-up of {email} failed: {reply.status_code} {reply.text[:300]}")
    return f"sid={reply.cookies['sid']}", urlencode({"email": email, "password": PASSWORD})


def start_servers(services: list[Server], servers: list[Uvicorn], args: argparse.Namespace) -> Setup:
    RESULTS.mkdir(exist_ok=True)
    services.append(start_redis(log_path=RESULTS / "redis.log"))
    services.append(start_mongo(log_path=RESULTS / "mongodb.log"))
    env = {
        "REDIS_URL": services[0].url,
        "MONGODB_URL": services[1].url,
        "SECRET_KEY": secrets.token_urlsafe(40),
        "COOKIE_SECURE": "0",  # plain http on loopback; the cookie is then called `sid`
        "BCRYPT_ROUNDS": str(ROUNDS),
    }
    servers.append(serve("app", "web.app:from_env", env, RESULTS / "app.log", "/healthz"))
    servers.append(serve("ceiling", "bench.ceiling:create", env, RESULTS / "ceiling.log", "/"))
    app, ceiling = servers

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        browsing = list(pool.map(lambda n: sign_up(app.url, n, "browse"), range(args.connections)))
        signing_in = list(pool.map(lambda n: sign_up(app.url, n, "login"), range(args.login_users)))
    cookies = [cookie for cookie, _ in browsing]

    page = httpx.get(app.url + "/", headers={"Cookie": cookies[0]})
    if page.status_code != 200 or "Hello, Bench User 0" not in page.text:
        raise RuntimeError(f"the signed-in home page did not come back: {page.status_code}")
    login_page = httpx.get(app.url + "/login")
    return Setup(
        app=app,
        ceiling=ceiling,
        redis=Redis.from_url(services[0].url, decode_responses=True),
        cookies=cookies,
        logins=[form for _, form in signing_in],
        page_bytes=len(page.content),
        login_page_bytes=len(login_page.content),
    )


# -- one run ---------------------------------------------------------------------------------


def expect_pages(result: wrk.Result, body_bytes: int, what: str) -> wrk.Result:
    """A redirect to /login would also be a fast 3xx: check that whole pages came back."""
    if result.bytes_per_response < body_bytes:
        raise wrk.WrkError(f"{what}: {result.bytes_per_response:.0f} bytes a response, not a page")
    return result


def one_run(setup: Setup, args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    warm, secs = args.warmup, args.duration
    app, conns, login_conns = setup.app, args.connections, args.login_connections

    out: dict[str, Any] = {}
    log("bcrypt limit")
    out["bcrypt_limit"] = bcrypt_limit(secs)
    # wrk stops with sign-ins in flight, and the app still checks their passwords: let those
    # finish before the next measurement starts, or it would pay for them.
    drain_s = args.login_connections / out["bcrypt_limit"] + 0.5

    def measure(name: str, server: Uvicorn, method: str, path: str, entries: list[str], conns: int) -> None:
        """Warm up, then measure; also the server's CPU time per request, which noise moves less."""
        wrk.run(server.url, method, path, entries, connections=conns, seconds=warm)
        if method == "POST":
            time.sleep(drain_s)
        cpu, calls = server.cpu_seconds(), redis_probe.command_calls(setup.redis)
        result = wrk.run(server.url, method, path, entries, connections=conns, seconds=secs)
        out[name] = result
        out[f"{name}_cpu_us"] = (server.cpu_seconds() - cpu) / max(result.requests, 1) * 1e6
        commands = redis_probe.calls_between(calls, redis_probe.command_calls(setup.redis))
        out[f"{name}_redis"] = {cmd: n / max(result.requests, 1) for cmd, n in commands.most_common()}

    # Each pair that makes a ratio is measured back to back, so that a burst of noise from
    # elsewhere on the machine is less likely to fall on one side only.
    log("POST /login")
    measure("login", app, "POST", "/login", setup.logins, login_conns)
    log("ceiling GET /")
    measure("ceiling", setup.ceiling, "GET", "/", setup.cookies, conns)
    expect_pages(out["ceiling"], setup.page_bytes, "ceiling GET /")
    log("signed-in GET /")
    measure("page", app, "GET", "/", setup.cookies, conns)
    expect_pages(out["page"], setup.page_bytes, "GET /")
    log("GET / while signing in")
    for seconds in (warm, secs):
        browse = wrk.start(app.url, "GET", "/", setup.cookies, connections=conns, seconds=seconds)
        sign_in = wrk.start(app.url, "POST", "/login", setup.logins, connections=login_conns, seconds=seconds)
        out["loaded_page"], out["loaded_login"] = wrk.finish(browse), wrk.finish(sign_in)
        time.sleep(drain_s)
    expect_pages(out["loaded_page"], setup.page_bytes, "GET / while signing in")

    log("anonymous GET /login")
    measure("anonymous", app, "GET", "/login", [], conns)
    expect_pages(out["anonymous"], setup.login_page_bytes, "GET /login")
    return out


def profile(setup: Setup, args: argparse.Namespace) -> Path:
    """Where the app's time goes under signed-in GET / load: a py-spy flamegraph (SVG)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise RuntimeError("--profile needs py-spy: pip install py-spy")
    out = RESULTS / f"profile-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.svg"
    wrk.run(setup.app.url, "GET", "/", setup.cookies, connections=args.connections, seconds=args.warmup)
    load = wrk.start(
        setup.app.url, "GET", "/", setup.cookies, connections=args.connections, seconds=args.duration + 2
    )
    # --nonblocking: pausing the app for every sample would change what is being measured.
    record = [spy, "record", "--pid", str(setup.app.process.pid), "--duration", str(round(args.duration))]
    subprocess.run([*record, "--rate", "250", "--nonblocking", "--output", str(out)], check=True)
    wrk.finish(load)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    services: list[Server] = []
    servers: list[Uvicorn] = []
    started = time.time()
    load_before = os.getloadavg()

    def log(step: str) -> None:
        print(f"  [{time.time() - started:6.1f} s] {step}", file=sys.stderr, flush=True)

    try:
        log("starting redis-server, SecantusDB, the app and the ceiling; signing up accounts")
        setup = start_servers(services, servers, args)
        runs = []
        pids = [s.process.pid for s in services] + [s.process.pid for s in servers]
        for n in range(args.runs):
            log(f"run {n + 1} of {args.runs}")
            (busy, steal), own, wall = machine_cpu_seconds(), own_cpu_seconds(pids), time.monotonic()
            runs.append(one_run(setup, args, log))
            (busy2, steal2), own2, wall2 = machine_cpu_seconds(), own_cpu_seconds(pids), time.monotonic()
            # Whatever else ran meanwhile, in cores: the figures of a run with much of it are suspect.
            runs[-1]["other_cores"] = max(0.0, (busy2 - busy) - (own2 - own)) / (wall2 - wall)
            runs[-1]["steal_cores"] = (steal2 - steal) / (wall2 - wall)
        if args.profile:
            log("profiling signed-in GET / with py-spy")
            log(f"flamegraph: {profile(setup, args)}")
        log("round trips (MONITOR) and memory per session")
        session_ids = [cookie.removeprefix("sid=").partition(".")[0] for cookie in setup.cookies]
        fetch = httpx.Client(base_url=setup.app.url, headers={"Cookie": setup.cookies[0]})
        with fetch:
            trips = redis_probe.round_trips(setup.redis, lambda: fetch.get("/").raise_for_status(), 100)
        memory = redis_probe.session_memory(setup.redis, session_ids)
        redis_version = str(setup.redis.info("server")["redis_version"])
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        for server in reversed(servers):
            server.stop()
        for service in reversed(services):
            service.stop()

    summary = report.summarise(
        runs,
        round_trips={name: n / 100 for name, n in Counter(trips).most_common()},
        memory=memory,
        machine=report.machine(redis_version, load_before),
        options=vars(args),
    )
    print(report.table(summary))
    path = report.save(summary, RESULTS)
    print(f"\nRaw figures: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
