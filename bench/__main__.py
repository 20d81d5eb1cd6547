"""`python -m bench`: measure the app with wrk against real Redis and SecantusDB, against its targets.

Everything runs on this machine: redis-server and SecantusDB (in memory), the development mail
catcher, the app, the ceiling and a minimal page (bench/ceiling.py), the last three one uvicorn
worker each, started like production; and wrk. Each ratio is taken within a run, between
measurements made back to back, so that a noisy machine moves both sides together; the table
shows the median over --runs runs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import secrets
import shutil
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import bcrypt
import httpx
from pymongo import MongoClient
from redis import Redis

from bench import redis_probe, report, wrk
from tests.helpers.servers import AppProcess, counting_commands, start_uvicorn
from web.auth.users import User
from web.embedded import start_mongo, start_redis
from web.mail.catcher import start_mail_catcher

LOGS = Path(__file__).resolve().parent / "results" / "logs"  # the servers' logs of the last run
PASSWORD = "bench passphrase, long enough"
ROUNDS = 12  # the app's default BCRYPT_ROUNDS
BCRYPT_SECONDS = 5.0
SIGN_INS = 8  # timed one after another, alone and during the flood of sign-ups
PAGES = 100  # signed-in pages fetched to count Redis round trips
SLICES = 4  # turns per page of the CPU ratios (in_turns)
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
Log = Callable[[str], None]


@dataclass
class Setup:
    app: AppProcess
    ceiling: AppProcess
    minimal: AppProcess
    redis: Redis
    redis_url: str
    cookies: list[str]  # "sid=..." of signed-in browsing users, one session each
    logins: list[str]  # urlencoded sign-in forms of the users who keep signing in
    taken: str  # an urlencoded sign-up form for an address that has an account
    user_ids: list[str]  # of the browsing users
    page_bytes: dict[str, int]  # each measured page's body, for checking what wrk received


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs to take the median of (3)")
    parser.add_argument("--duration", type=float, default=8, help="seconds per measurement (8)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of load before each (2)")
    parser.add_argument("--connections", type=int, default=32, help="page-view connections (32)")
    parser.add_argument("--login-connections", type=int, default=8, help="sign-in connections (8)")
    parser.add_argument("--login-users", type=int, default=16, help="accounts the sign-ins rotate over")
    parser.add_argument(
        "--flood-connections", type=int, default=40, help="connections signing up with a taken address (40)"
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


def cpu_seconds(server: AppProcess) -> float:
    """User and system CPU time of a server process so far, all of its threads."""
    fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


# -- setting up: services, the three servers, accounts ---------------------------------------


def sign_up(base_url: str, n: int, kind: str) -> tuple[str, str]:
    """Create an account over HTTP; return its session cookie and its sign-in form."""
    email = f"bench-{kind}-{n}@example.com"
    form = {"first_name": "Bench", "last_name": f"User {n}", "email": email, "password": PASSWORD}
    reply = httpx.post(f"{base_url}/signup", data=form, timeout=30)
    if reply.status_code != 303 or "sid" not in reply.cookies:
        raise RuntimeError(f"sign-up of {email} failed: {reply.status_code} {reply.text[:300]}")
    return f"sid={reply.cookies['sid']}", urlencode({"email": email, "password": PASSWORD})


@contextmanager
def servers(args: argparse.Namespace, log: Log) -> Iterator[Setup]:
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)
    with ExitStack() as stack:
        redis_server = start_redis(log_path=LOGS / "redis.log")
        stack.callback(redis_server.stop)
        mongo_server = start_mongo(log_path=LOGS / "mongodb.log")
        stack.callback(mongo_server.stop, 1.0)  # in memory: nothing to flush
        mail = start_mail_catcher(LOGS / "mail", log_path=LOGS / "mail.log")
        stack.callback(mail.stop)
        env = {
            "REDIS_URL": redis_server.url,
            "MONGODB_URL": mongo_server.url,
            "SMTP_URL": mail.url,
            "SECRET_KEY": secrets.token_urlsafe(40),
            "COOKIE_SECURE": "0",  # plain http on loopback; the cookie is then called `sid`
            "BCRYPT_ROUNDS": str(ROUNDS),
            # The accounts below, and the flood of sign-ups, come from one address.
            "SIGNUP_IP_LIMIT": "1000000",
            "SIGNUP_LIMIT": "1000000",
        }
        app = stack.enter_context(start_uvicorn("web.app:from_env", LOGS, name="app", **env))
        ceiling = stack.enter_context(
            start_uvicorn("bench.ceiling:create", LOGS, name="ceiling", ready_path="/", **env)
        )
        ceiling_page = httpx.get(ceiling.url + "/").content
        minimal = stack.enter_context(
            start_uvicorn(
                "bench.ceiling:minimal",
                LOGS,
                name="minimal",
                ready_path="/",
                BENCH_PAGE_BYTES=str(len(ceiling_page)),
            )
        )
        log("signing up accounts")
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            browsing = list(pool.map(lambda n: sign_up(app.url, n, "browse"), range(args.connections)))
            signing_in = list(pool.map(lambda n: sign_up(app.url, n, "login"), range(args.login_users)))
        cookies = [cookie for cookie, _ in browsing]
        page = httpx.get(app.url + "/", headers={"Cookie": cookies[0]})
        if page.status_code != 200 or "Hello, Bench User 0" not in page.text:
            raise RuntimeError(f"the signed-in home page did not come back: {page.status_code}")
        emails = [f"bench-browse-{n}@example.com" for n in range(args.connections)]
        with MongoClient(mongo_server.url) as mongo:
            users = mongo.get_default_database()[User.Settings.name]
            user_ids = [str(u["_id"]) for u in users.find({"email": {"$in": emails}}, {"_id": 1})]
        redis = stack.enter_context(Redis.from_url(redis_server.url, decode_responses=True))
        taken = {"first_name": "Bench", "last_name": "Again", "email": emails[0], "password": PASSWORD}
        yield Setup(
            app=app,
            ceiling=ceiling,
            minimal=minimal,
            redis=redis,
            redis_url=redis_server.url,
            cookies=cookies,
            logins=[form for _, form in signing_in],
            taken=urlencode(taken),
            user_ids=user_ids,
            page_bytes={
                "page": len(page.content),
                "ceiling": len(ceiling_page),
                "minimal": len(httpx.get(minimal.url + "/").content),
                "anonymous": len(httpx.get(app.url + "/login").content),
            },
        )


# -- one run ---------------------------------------------------------------------------------


def expect_pages(result: wrk.Result, body_bytes: int, what: str) -> None:
    """A redirect to /login would also be a fast 3xx: check that whole pages came back."""
    if result.bytes_per_response < body_bytes:
        raise wrk.WrkError(f"{what}: {result.bytes_per_response:.0f} bytes a response, not a page")


def sign_in_ms(url: str, form: str, n: int) -> float:
    """The median time of n sign-ins one after another, each from a new browser, in ms."""
    times = []
    for _ in range(n):
        started = time.perf_counter()
        reply = httpx.post(
            url + "/login",
            content=form,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            timeout=30,
        )
        times.append((time.perf_counter() - started) * 1000)
        if reply.status_code != 303:
            raise RuntimeError(f"a timed sign-in got {reply.status_code}: {reply.text[:300]}")
    return statistics.median(times)


def in_turns(setup: Setup, args: argparse.Namespace) -> report.Run:
    """The pages that make the CPU ratios, each measured in SLICES turns of duration / SLICES.

    On a shared machine whose speed drifts over seconds (a cloud VM), back-to-back measurements
    of 8 s each put the two sides of a ratio in different weather; in turns, both sides see the
    same. Requests, bytes and CPU time are summed over a page's turns; its latency percentiles
    are the median of the turns'.
    """
    pages = {
        "minimal": (setup.minimal, "/", []),
        "ceiling": (setup.ceiling, "/", setup.cookies),
        "page": (setup.app, "/", setup.cookies),
        "anonymous": (setup.app, "/login", []),
    }
    for server, path, entries in pages.values():
        wrk.run(server.url, "GET", path, entries, connections=args.connections, seconds=args.warmup)
    turns: dict[str, list[wrk.Result]] = {name: [] for name in pages}
    cpu = dict.fromkeys(pages, 0.0)
    for _ in range(SLICES):
        for name, (server, path, entries) in pages.items():
            before = cpu_seconds(server)
            result = wrk.run(
                server.url, "GET", path, entries, connections=args.connections, seconds=args.duration / SLICES
            )
            turns[name].append(result)
            cpu[name] += cpu_seconds(server) - before
    out: report.Run = {}
    for name, results in turns.items():
        out[name] = merged = wrk.Result(
            requests=sum(r.requests for r in results),
            seconds=sum(r.seconds for r in results),
            bytes=sum(r.bytes for r in results),
            p50_ms=statistics.median(r.p50_ms for r in results),
            p99_ms=statistics.median(r.p99_ms for r in results),
        )
        out[f"{name}_cpu_us"] = cpu[name] / max(merged.requests, 1) * 1e6
        expect_pages(merged, setup.page_bytes[name], f"GET {pages[name][1]} ({pages[name][0].name})")
    return out


def one_run(setup: Setup, args: argparse.Namespace, log: Log) -> report.Run:
    warm, secs, conns = args.warmup, args.duration, args.connections
    out: report.Run = {}
    log("bcrypt limit")
    out["bcrypt_limit"] = bcrypt_limit(BCRYPT_SECONDS)
    # wrk stops with sign-ins in flight, and the app still checks their passwords: let those
    # finish before the next measurement starts, or it would pay for them.
    drain_s = args.login_connections / out["bcrypt_limit"] + 0.5

    def measure(name: str, server: AppProcess, method: str, path: str, entries: list[str], n: int) -> None:
        """Warm up, then measure; also the server's CPU time per request, which noise moves less."""
        wrk.run(server.url, method, path, entries, connections=n, seconds=warm)
        if method == "POST":
            time.sleep(drain_s)
        cpu = cpu_seconds(server)
        out[name] = result = wrk.run(server.url, method, path, entries, connections=n, seconds=secs)
        out[f"{name}_cpu_us"] = (cpu_seconds(server) - cpu) / max(result.requests, 1) * 1e6
        if method == "POST":
            time.sleep(drain_s)
        else:
            expect_pages(result, setup.page_bytes[name], f"{method} {path} ({server.name})")

    log("POST /login")
    measure("login", setup.app, "POST", "/login", setup.logins, args.login_connections)
    log("minimal page, ceiling, signed-in GET /, anonymous GET /login, in turns")
    out.update(in_turns(setup, args))
    log("GET / while signing in")
    browse = wrk.start(setup.app.url, "GET", "/", setup.cookies, connections=conns, seconds=secs)
    logins = wrk.start(
        setup.app.url, "POST", "/login", setup.logins, connections=args.login_connections, seconds=secs
    )
    out["loaded_page"], out["loaded_login"] = browse.finish(), logins.finish()
    expect_pages(out["loaded_page"], setup.page_bytes["page"], "GET / while signing in")
    time.sleep(drain_s)

    log("sign-ins, alone and during a flood of sign-ups for a taken address")
    out["sign_in_ms"] = sign_in_ms(setup.app.url, setup.logins[0], SIGN_INS)
    # Until stopped: however long the timed sign-ins take, they all meet the flood.
    flood = wrk.start(
        setup.app.url,
        "POST",
        "/signup",
        [setup.taken],
        connections=args.flood_connections,
        seconds=600,
        expect=(409, 429),
    )
    time.sleep(warm)
    out["flooded_sign_in_ms"] = sign_in_ms(setup.app.url, setup.logins[0], SIGN_INS)
    flood.process.send_signal(signal.SIGINT)  # wrk stops and reports
    out["flood"] = flood.finish()
    return out


def redis_costs(
    setup: Setup,
) -> tuple[tuple[Counter[str], Counter[str]], Counter[str], redis_probe.SessionMemory]:
    """Round trips (the pages', the mail senders') and commands per signed-in page, and memory
    per session."""
    with httpx.Client(base_url=setup.app.url, headers={"Cookie": setup.cookies[0]}) as browser:

        def fetch() -> None:
            browser.get("/").raise_for_status()

        with counting_commands(setup.redis) as commands:
            for _ in range(PAGES):
                fetch()
        trips = redis_probe.round_trips(setup.redis, fetch, PAGES)
    memory = asyncio.run(redis_probe.session_memory(setup.redis_url, setup.redis, setup.user_ids))
    return trips, commands, memory


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    load_before = os.getloadavg()

    def log(step: str) -> None:
        print(f"  [{time.time() - started:6.1f} s] {step}", file=sys.stderr, flush=True)

    try:
        log("starting redis-server, SecantusDB, the app, the ceiling and the minimal page")
        with servers(args, log) as setup:
            runs = []
            for n in range(args.runs):
                log(f"run {n + 1} of {args.runs}")
                runs.append(one_run(setup, args, log))
            log("Redis round trips and memory per session")
            trips, commands, memory = redis_costs(setup)
            redis_version = str(setup.redis.info("server")["redis_version"])
    except RuntimeError as exc:  # wrk, the servers (AppDidNotStart) or the app answering wrongly
        print(f"error: {exc}", file=sys.stderr)
        return 1
    log("done")
    print(
        report.table(
            runs,
            options=vars(args),
            round_trips=trips[0],
            background=trips[1],
            commands=commands,
            pages=PAGES,
            memory=memory,
            machine=report.machine(redis_version, load_before, os.getloadavg()),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
