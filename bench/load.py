"""`python -m bench.load`: keep the app busy with signed-in traffic and check every answer.

Starts redis-server (persisted to a data folder, so a restart keeps the sessions), SecantusDB,
the development mail catcher and the app (uvicorn, one worker), signs up --users accounts over
HTTP, then keeps --clients workers busy for --duration seconds on a mix of GET /, GET /session,
POST /session/refresh and POST /login, each worker on a session of its own. Every answer must
be the expected 2xx or 3xx. With --restart-redis, Redis is stopped half-way and started again
on the same port and data folder: requests in flight during that outage may be 503 with
Retry-After, nothing else, and the same sessions must work after it. Exit status 1 when that
does not hold.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import math
import random
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from redis import Redis as SyncRedis
from redis.exceptions import BusyLoadingError

from tests.helpers.servers import AppProcess, start_uvicorn
from web.embedded import Server, start_mongo, start_redis
from web.mail.catcher import start_mail_catcher

PASSWORD = "load test passphrase, long enough"
SIGNUPS = 100_000  # an hour, from one address: far more than any run makes
TIMEOUT_S = 10.0
JSON = {"Accept": "application/json"}
SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}
# kind -> (weight in the mix, the status a signed-in user must get)
KINDS: dict[str, tuple[int, int]] = {
    "GET /": (4, 200),
    "GET /session": (3, 200),
    "POST /session/refresh": (2, 200),
    "POST /login": (1, 303),
}

SIGNED_OUT = {("GET /", 303), ("POST /session/refresh", 401)}


@dataclass(frozen=True)
class Options:
    users: int = 20
    clients: int = 16
    duration: float = 10.0
    restart_redis: bool = False
    outage: float = 1.0  # seconds Redis stays down
    bcrypt_rounds: int = 4


@dataclass(frozen=True)
class Sample:
    kind: str
    status: int  # 0: no HTTP answer at all
    start: float  # time.monotonic()
    end: float
    good: bool  # the expected status (and, for GET /session, still signed in)
    retry_after: bool
    error: str = ""
    worker: int = -1  # which client sent it (each holds a session of its own)

    @property
    def ms(self) -> float:
        return (self.end - self.start) * 1000

    @property
    def signed_out(self) -> bool:
        """The answer a signed-out browser gets: to the sign-in page, 401, or not authenticated."""
        return (self.kind, self.status) in SIGNED_OUT or self.error == "signed out"


@dataclass(frozen=True)
class Outage:
    down: float  # time.monotonic() just before Redis was stopped
    gone: float  # ... once its process had exited
    up: float  # ... and once the restarted Redis answered

    def covers(self, sample: Sample) -> bool:
        return sample.start <= self.up and sample.end >= self.down


# -- the servers -----------------------------------------------------------------------------


@dataclass
class Stack:
    redis: Server
    mongo: Server
    app: AppProcess
    workdir: Path

    @property
    def url(self) -> str:
        return self.app.url

    def restart_redis(self, down_for: float) -> Outage:
        """Stop Redis (SIGTERM: it writes its append-only file), wait, start it on the same port."""
        down = time.monotonic()
        self.redis.stop()
        gone = time.monotonic()
        time.sleep(down_for)
        self.redis = start_redis(
            self.workdir / "redis", port=self.redis.port, log_path=self.workdir / "redis.log"
        )
        # Listening is not serving: until its append-only file is loaded, Redis answers LOADING
        # (a 503 from the app), and that file grows with every sign-in of the run.
        with SyncRedis.from_url(self.redis.url) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.ping()
                    break
                except BusyLoadingError:
                    if time.monotonic() > deadline:
                        raise
        return Outage(down, gone, time.monotonic())

    def app_tracebacks(self) -> int:
        return self.app.log().count("Traceback")


@contextlib.contextmanager
def stack(workdir: Path, bcrypt_rounds: int) -> Iterator[Stack]:
    """Redis, SecantusDB and the app; the app stops first, while its services still answer."""
    redis = start_redis(workdir / "redis", log_path=workdir / "redis.log")
    running: Stack | None = None
    try:
        with contextlib.ExitStack() as cleanup:
            mongo = start_mongo(log_path=workdir / "mongodb.log")
            # In memory, nothing to flush: no need to wait out a SIGTERM it sometimes misses
            # (the wake-up connection of Server.stop can come before the signal), then SIGKILL.
            cleanup.callback(mongo.stop, 1.0)
            mail = start_mail_catcher(workdir / "mail", log_path=workdir / "mail.log")
            cleanup.callback(mail.stop)
            app = cleanup.enter_context(
                start_uvicorn(
                    "web.app:from_env",
                    workdir,
                    REDIS_URL=redis.url,
                    MONGODB_URL=mongo.url,
                    SMTP_URL=mail.url,
                    SECRET_KEY=secrets.token_urlsafe(40),
                    COOKIE_SECURE="0",  # plain http on loopback
                    BCRYPT_ROUNDS=str(bcrypt_rounds),
                    SIGNUP_IP_LIMIT=str(SIGNUPS),  # every account is made from this one address
                )
            )
            running = Stack(redis, mongo, app, workdir)
            yield running
    finally:
        (running.redis if running else redis).stop()  # the restarted one, if it was restarted


# -- the load --------------------------------------------------------------------------------


def email(n: int) -> str:
    return f"load-{n}@example.com"


async def sign_up(url: str, users: int) -> None:
    """Create the accounts over HTTP, a few at a time."""
    gate = asyncio.Semaphore(8)

    async def one(client: httpx.AsyncClient, n: int) -> None:
        async with gate:
            form = {"first_name": "Load", "last_name": f"User {n}", "email": email(n), "password": PASSWORD}
            reply = await client.post("/signup", data=form)
        if reply.status_code != 303:
            raise RuntimeError(f"sign-up of {email(n)} failed: {reply.status_code} {reply.text[:300]}")

    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S) as client:
        await asyncio.gather(*(one(client, n) for n in range(users)))


async def request(client: httpx.AsyncClient, kind: str, user: int) -> httpx.Response:
    if kind == "GET /":
        return await client.get("/")
    if kind == "GET /session":
        return await client.get("/session", headers=JSON)
    if kind == "POST /session/refresh":
        return await client.post("/session/refresh", headers={**SAME_ORIGIN, **JSON})
    form = {"email": email(user), "password": PASSWORD}
    return await client.post("/login", data=form, headers=SAME_ORIGIN)


async def measure(client: httpx.AsyncClient, kind: str, user: int, worker: int = -1) -> Sample:
    start = time.monotonic()
    try:
        reply = await request(client, kind, user)
    except httpx.HTTPError as exc:
        return Sample(
            kind, 0, start, time.monotonic(), good=False, retry_after=False, error=repr(exc), worker=worker
        )
    end = time.monotonic()
    good = reply.status_code == KINDS[kind][1]
    signed_out = kind == "GET /session" and good and reply.json().get("authenticated") is not True
    return Sample(
        kind,
        reply.status_code,
        start,
        end,
        good=good and not signed_out,
        retry_after="retry-after" in reply.headers,
        error="signed out" if signed_out else "",
        worker=worker,
    )


async def drive(url: str, options: Options, started: threading.Event) -> list[Sample]:
    """Sign each worker in on a session of its own, then run the mix until the time is up."""
    samples: list[Sample] = []
    kinds, weights = list(KINDS), [weight for weight, _ in KINDS.values()]

    async def work(client: httpx.AsyncClient, user: int, deadline: float, n: int) -> None:
        rng = random.Random(n)
        while time.monotonic() < deadline:
            samples.append(await measure(client, rng.choices(kinds, weights)[0], user, n))

    async with contextlib.AsyncExitStack() as clients_stack:
        clients = [
            await clients_stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S))
            for _ in range(options.clients)
        ]
        workers = [(client, n % options.users) for n, client in enumerate(clients)]  # (client, user)
        signed_in = await asyncio.gather(*(measure(c, "POST /login", u) for c, u in workers))
        if not all(s.good for s in signed_in):
            raise RuntimeError(f"signing the workers in failed: {[s.status for s in signed_in]}")
        started.set()
        deadline = time.monotonic() + options.duration
        await asyncio.gather(*(work(c, u, deadline, n) for n, (c, u) in enumerate(workers)))
    return samples


# -- the verdict -----------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else math.nan


@dataclass
class Report:
    samples: list[Sample]
    seconds: float
    outage: Outage | None = None
    tracebacks: int = 0  # in the app's log
    began: float = field(default_factory=time.monotonic)  # when the timed load started

    def excused(self, sample: Sample) -> bool:
        """A 503 with Retry-After for a request in flight while Redis was down; or a signed-out
        answer to a worker whose sign-in that outage cut off (see `signed_out_by_outage`)."""
        return self.down(sample) or id(sample) in self.signed_out_by_outage

    def down(self, sample: Sample) -> bool:
        """A 503 with Retry-After for a request in flight while Redis was down."""
        return (
            self.outage is not None
            and self.outage.covers(sample)
            and sample.status == 503
            and sample.retry_after
        )

    @functools.cached_property
    def signed_out_by_outage(self) -> set[int]:
        """Signed-out answers (ids of the samples) that a sign-in cut off by the outage explains.

        A sign-in replaces the browser's session: the new one is stored, then the old one
        deleted. Redis, stopping, runs the commands it has read and exits without sending their
        replies (it writes its append-only file, not its sockets): when that is the deletion, the
        worker gets a 503 and keeps a cookie for a session that is gone: signed out until it
        signs in again, as after any sign-in that an outage cut short (the app does not hand out
        a session whose sign-in did not finish). Excused: only for a sign-in that started before
        Redis exited (once it has, nothing reaches it), only that worker's signed-out answers,
        and only until its next good sign-in.
        """
        if self.outage is None:
            return set()
        outage, excused, cut_off = self.outage, set(), set()
        for sample in sorted(self.samples, key=lambda s: s.start):  # each worker's in its order
            if sample.kind == "POST /login":
                if sample.good:
                    cut_off.discard(sample.worker)
                elif outage.covers(sample) and sample.start < outage.gone:
                    cut_off.add(sample.worker)
            elif sample.worker in cut_off and sample.signed_out:
                excused.add(id(sample))
        return excused

    @property
    def unavailable(self) -> list[Sample]:
        return [s for s in self.samples if not s.good and self.down(s)]

    @property
    def failures(self) -> list[Sample]:
        return [s for s in self.samples if not s.good and not self.excused(s)]

    @property
    def ok(self) -> bool:
        return bool(self.samples) and not self.failures and not self.tracebacks

    def table(self) -> str:
        head = f"{'':22} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'503':>6} {'failed':>7}"
        lines = [head]
        for kind in [*KINDS, "all"]:
            rows = [s for s in self.samples if kind in (s.kind, "all")]
            good_ms = [s.ms for s in rows if s.good]
            lines.append(
                f"{kind:22} {len(rows):9d} {len(rows) / self.seconds:8.1f} "
                f"{percentile(good_ms, 50):8.1f} {percentile(good_ms, 99):8.1f} "
                f"{sum(1 for s in rows if self.down(s)):6d} "
                f"{sum(1 for s in rows if not s.good and not self.excused(s)):7d}"
            )
        lines.append("(latencies of the expected answers only)")
        if self.outage:
            down, up = self.outage.down - self.began, self.outage.up - self.began
            lines.append(
                f"Redis down from {down:.2f} s to {up:.2f} s ({up - down:.2f} s): "
                f"{len(self.unavailable)} answers in that window were 503 with Retry-After."
            )
            if self.signed_out_by_outage:
                lines.append(
                    f"{len(self.signed_out_by_outage)} signed-out answers came after a sign-in "
                    "that the outage cut off, until that worker signed in again."
                )
        for sample in self.failures[:10]:
            at = sample.start - self.began
            lines.append(f"FAILED  {sample.kind} at {at:.2f} s: {sample.status} {sample.error}")
        if self.tracebacks:
            lines.append(f"FAILED  {self.tracebacks} tracebacks in the app's log")
        lines.append("OK" if self.ok else f"FAILED: {len(self.failures)} unexpected answers")
        return "\n".join(lines)


def run(running: Stack, options: Options) -> Report:
    """Sign up the users, run the load (restarting Redis half-way if asked) and judge the answers."""
    asyncio.run(sign_up(running.url, options.users))
    started = threading.Event()
    # The load runs on a thread of its own, so that the restart below (blocking calls, and a
    # server that must be started from this thread, see web.embedded) never stalls its loop.
    with ThreadPoolExecutor(max_workers=1) as pool:
        load = pool.submit(asyncio.run, drive(running.url, options, started))
        while not started.wait(0.1):
            if load.done():
                load.result()  # signing in failed: raise that
        began = time.monotonic()
        outage = None
        if options.restart_redis:
            time.sleep(max(0.0, (options.duration - options.outage) / 2))
            outage = running.restart_redis(options.outage)
        samples = load.result()
    seconds = max(time.monotonic() - began, 1e-9)
    return Report(samples, seconds, outage, running.app_tracebacks(), began=began)


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20, help="accounts to sign up (20)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent workers (16)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load (10)")
    parser.add_argument("--restart-redis", action="store_true", help="stop and restart Redis half-way")
    parser.add_argument("--outage", type=float, default=1.0, help="seconds Redis stays down (1)")
    parser.add_argument("--bcrypt-rounds", type=int, default=4, help="the app's BCRYPT_ROUNDS (4)")
    args = parser.parse_args(argv)
    return Options(
        users=args.users,
        clients=args.clients,
        duration=args.duration,
        restart_redis=args.restart_redis,
        outage=args.outage,
        bcrypt_rounds=args.bcrypt_rounds,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        try:
            with stack(Path(tmp), options.bcrypt_rounds) as running:
                report = run(running, options)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(report.table())
        if not report.ok:
            print(f"\nThe app's log:\n{running.app.log()[-3000:]}", file=sys.stderr)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
