"""Password hashing (bcrypt, in worker threads) and the password policy."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import hmac
import logging
import os
import threading
import time
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import TypeVar

import bcrypt

from web import metrics

log = logging.getLogger(__name__)
T = TypeVar("T")

QUEUE_SECONDS = 2.0  # the longest a password may wait for a bcrypt thread before 503
MAX_LENGTH = 1024  # characters; far beyond any passphrase, short of a denial of service
# bcrypt reads only 72 bytes (bcrypt 5 refuses more). Every password is first reduced to a
# fixed 44-byte string, so all of it counts. A keyed HMAC rather than a bare SHA-256 keeps a
# leaked list of unsalted SHA-256 hashes from other sites from being tried against ours.
_PREHASH_KEY = b"web.auth.passwords/v1"
# Common passwords: Django's list (20k, from Royce Williams' compilation; Django is BSD-3).
COMMON_PASSWORDS = Path(__file__).with_name("common-passwords.txt.gz")


def _normalise(password: str) -> str:
    # NFKC, as NIST SP 800-63B asks: the same passphrase typed on two keyboards must match.
    return unicodedata.normalize("NFKC", password)


def _prehash(password: str) -> bytes:
    mac = hmac.new(_PREHASH_KEY, _normalise(password).encode("utf-8", "surrogatepass"), hashlib.sha256)
    return base64.b64encode(mac.digest())


@cache
def common_passwords() -> frozenset[str]:
    with gzip.open(COMMON_PASSWORDS, "rt", encoding="utf-8") as f:
        return frozenset(line.strip() for line in f if line.strip())


def _lower_priority() -> None:
    # Logins may wait a little; page views may not. A nice'd hashing thread yields the cores to
    # the event loop's thread whenever it has work (Linux sets niceness per thread).
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (OSError, AttributeError) as exc:
        log.debug("could not lower the hashing threads' priority: %s", exc)


class Busy(Exception):
    """Too many passwords are waiting to be hashed; the caller should answer 503 at once."""


class Passwords:
    """Hash and check passwords off the event loop, a bounded number at a time; apply the policy."""

    def __init__(self, *, rounds: int, min_length: int, queue_limit: int = 0) -> None:
        self.rounds = rounds
        self.min_length = min_length
        workers = os.cpu_count() or 2
        self._pool = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="bcrypt", initializer=_lower_priority
        )
        # Jobs running or waiting. Past the limit a request is refused rather than queued: a
        # flood of sign-ups must not make every sign-in wait its turn behind it for seconds.
        # Unless set, start() sizes it to about QUEUE_SECONDS of work at this cost and machine.
        self.workers = workers
        self.queue_limit = queue_limit or 8 * workers
        self._fixed_limit = bool(queue_limit)
        self.pending = 0
        self._dummy: bytes | None = None

    async def _run(self, fn: Callable[[bytes, bytes], T], password: bytes, salt_or_hash: bytes) -> T:
        if self.pending >= self.queue_limit:
            raise Busy
        loop = asyncio.get_running_loop()
        self.pending += 1
        try:
            with metrics.bcrypt_job():
                return await loop.run_in_executor(self._pool, fn, password, salt_or_hash)
        finally:
            self.pending -= 1

    async def start(self) -> None:
        """Make the stand-in hash for unknown accounts, so even the first miss costs one check."""
        started = time.perf_counter()
        self._dummy = (await self.hash("timing equaliser for unknown accounts")).encode()
        if not self._fixed_limit:
            one = max(time.perf_counter() - started, 1e-4)
            self.queue_limit = max(2 * self.workers, int(self.workers * QUEUE_SECONDS / one))
        await asyncio.get_running_loop().run_in_executor(self._pool, common_passwords)

    async def hash(self, password: str) -> str:
        hashed = await self._run(bcrypt.hashpw, _prehash(password), bcrypt.gensalt(self.rounds))
        return hashed.decode()

    def needs_rehash(self, hashed: str) -> bool:
        """Whether a stored hash was made with other rounds than today's setting."""
        return not hashed.startswith(f"$2b${self.rounds:02d}$")

    async def verify(self, password: str, hashed: str | None) -> bool:
        """Check a password; with no hash (unknown account) spend the same time and say no."""
        if hashed is None:
            if self._dummy is None:
                await self.start()
            assert self._dummy is not None
            await self._run(bcrypt.checkpw, _prehash(password), self._dummy)
            return False
        try:
            return await self._run(bcrypt.checkpw, _prehash(password), hashed.encode())
        except ValueError:
            log.error("a stored password hash is not a bcrypt hash")
            return False

    def problem(self, password: str, *, email: str = "") -> str | None:
        """What is wrong with a new password, or None. Length and known-bad lists only (NIST)."""
        length = len(_normalise(password))
        if length < self.min_length:
            return f"Use at least {self.min_length} characters."
        if length > MAX_LENGTH:
            return f"Use at most {MAX_LENGTH} characters."
        lowered = _normalise(password).lower()
        if lowered in common_passwords():
            return "This password is one of the most common ones. Choose another."
        if email and lowered in (email.lower(), email.lower().partition("@")[0]):
            return "Don't use your email address as your password."
        return None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
