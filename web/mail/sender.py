"""The background sender: takes mail off the queue and hands it to SMTP, retrying until it goes.

Any number of senders (one per app process) share the queue; each message is taken by one of
them at a time. A message whose sending failed for a reason that may pass (SMTP down, 4xx) is
left pending and retried once it has been idle `claim_idle_ms`, by whichever sender claims it
first; so is a message whose sender died. Meanwhile the sender that saw the failure backs off
(doubling, up to `max_backoff_s`), so a down SMTP server sees about one attempt per pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable
from email.message import EmailMessage

from redis.exceptions import ClusterDownError, ReadOnlyError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from web import metrics
from web.mail import smtp
from web.mail.queue import MailQueue, QueuedMail
from web.mail.smtp import DeliveryError, SmtpConfig

log = logging.getLogger(__name__)

DEPTH_EVERY_S = 5.0  # how often the queue depth is read
DEPTH_LOG_EVERY_S = 60.0  # how often an unchanged, non-empty depth is logged again
PRUNE_EVERY_S = 3600.0
PRUNE_IDLE_MS = 24 * 3600 * 1000  # a consumer unseen for a day, holding nothing, is gone
CANCEL_TRIES = 10
# Redis away, or mid-failover: an outage to report in one line. Anything else is a bug to trace.
_OUTAGE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, ClusterDownError, TryAgainError, OSError)


def consumer_name() -> str:
    """hostname-pid-random: unique per sender, and says where it ran."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class MailSender:
    """Deliver queued mail from inside the app process; start() once, await stop() at shutdown.

    block_ms must stay below the Redis client's socket timeout (1 s in web.redis), or the
    blocking read would time out.
    """

    def __init__(
        self,
        queue: MailQueue,
        config: SmtpConfig,
        *,
        consumer: str | None = None,
        claim_idle_ms: int = 30_000,
        block_ms: int = 500,
        batch: int = 10,
        min_backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        max_age_s: float = 3 * 24 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue = queue
        self.config = config
        self.consumer = consumer or consumer_name()
        self.claim_idle_ms = claim_idle_ms
        self.block_ms = block_ms
        self.batch = batch
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_age_s = max_age_s
        self.clock = clock
        # Counters, for metrics.
        self.sent = 0
        self.failed_transient = 0
        self.failed_permanent = 0
        self.expired = 0
        self.redis_errors = 0
        self.depth: int | None = None  # as last read
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._smtp_failures = 0  # in a row: sets the backoff
        self._redis_failures = 0
        self._group_ready = False
        self._cursor = "0-0"  # where the next XAUTOCLAIM scan starts
        self._finished: set[str] = set()  # sent or dropped, but Redis was away to record it
        self._depth_read_at = float("-inf")
        self._depth_logged: tuple[int, float] | None = None
        self._prune_at = 0.0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Run the sender as a task on the current event loop."""
        if self.running:
            raise RuntimeError("the mail sender is already running")
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=f"mail sender {self.consumer}")

    async def stop(self, grace_s: float | None = None) -> None:
        """Finish the message being sent, hand the others back, end the task; bounded in time."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        # Long enough for one delivery and one blocking read to end by themselves.
        bound = self.config.timeout + self.block_ms / 1000 + 1 if grace_s is None else grace_s
        done, _ = await asyncio.wait({task}, timeout=bound)
        if done:
            return
        log.warning("mail sender still busy after %.1f s: cancelled; its message will be retried", bound)
        # redis-py can lose a cancellation that lands mid-command (redis/redis-py#2028, #2551):
        # cancel again until one is seen, within a bound.
        for _ in range(CANCEL_TRIES):
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if done:
                return
        log.error("mail sender task ignored %d cancellations; left behind", CANCEL_TRIES)

    async def _run(self) -> None:
        log.info("mail sender %s delivering to %s", self.consumer, self.config)
        while not self._stopping.is_set():
            try:
                pause = await self._step()
                self._redis_failures = 0
            except Exception as exc:
                pause = self._redis_failed(exc)
            if pause > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self._stopping.wait()
        try:
            # Nothing held any more: this consumer's name need not outlive it.
            await self.queue.prune_consumers(idle_ms=0, name=self.consumer)
        except Exception as exc:
            log.warning("mail sender %s: could not unregister: %r", self.consumer, exc)

    async def _step(self) -> float:
        """One round: claim or read a batch and send it; return how long to pause."""
        if not self._group_ready:
            await self.queue.ensure_group()
            self._group_ready = True
        if self._finished:
            await self.queue.done(*self._finished)
            self._finished.clear()
        await self._housekeeping()
        self._cursor, batch = await self.queue.claim(
            self.consumer, min_idle_ms=self.claim_idle_ms, count=self.batch, cursor=self._cursor
        )
        if not batch and self._cursor == "0-0":
            batch = await self.queue.read(self.consumer, count=self.batch, block_ms=self.block_ms)
        for i, mail in enumerate(batch):
            if self._stopping.is_set():
                # Let another sender have them now rather than after claim_idle_ms.
                rest = [m.id for m in batch[i:]]
                await self.queue.hold(self.consumer, rest, idle_ms=self.claim_idle_ms)
                return 0.0
            if not await self._deliver(mail):
                # SMTP is failing: the rest of the batch stays pending, to be claimed later.
                return self._backoff(self._smtp_failures)
        return 0.0

    async def _deliver(self, mail: QueuedMail) -> bool:
        """Send one message, or drop it; False when SMTP failed in a way that may pass."""
        age = self.clock() - mail.created
        if age > self.max_age_s:
            self.expired += 1
            log.warning(
                "mail %s dropped: queued %.1f h ago, past the %.1f h limit",
                mail.id,
                age / 3600,
                self.max_age_s / 3600,
            )
            await self._finish(mail.id)
            return True
        try:
            message = self.queue.open(mail)
        except Exception as exc:
            self.failed_permanent += 1
            metrics.mail_send_failed("permanent")
            log.error("mail %s dropped: cannot open it (%s); a retired SECRET_KEY?", mail.id, exc)
            await self._finish(mail.id)
            return True
        # Another sender may have claimed it while it waited in our batch, or it was deleted.
        if not await self.queue.hold(self.consumer, [mail.id]):
            return True
        try:
            await self._send_held(mail.id, message)
        except DeliveryError as exc:
            if not exc.permanent:
                self.failed_transient += 1
                metrics.mail_send_failed("transient")
                self._smtp_failures += 1
                log.warning("mail %s not sent, will retry: %s (%s)", mail.id, exc.reason, self.config)
                return False
            self.failed_permanent += 1
            metrics.mail_send_failed("permanent")
            self._smtp_failures = 0
            log.warning("mail %s dropped: %s", mail.id, exc.reason)
        else:
            self.sent += 1
            metrics.mail_sent()
            self._smtp_failures = 0
            log.info("mail %s sent", mail.id)
        await self._finish(mail.id)
        return True

    async def _finish(self, entry_id: str) -> None:
        try:
            await self.queue.done(entry_id)
        except Exception:
            # Remembered and retried first thing next round: sending it again would duplicate it.
            self._finished.add(entry_id)
            raise

    async def _send_held(self, entry_id: str, message: EmailMessage) -> None:
        """Send, renewing the claim on the entry meanwhile, so no other sender takes it over."""
        # SMTP runs in a task of its own and the renewals here, not the other way round: a
        # renewing task would have to be cancelled at the end, and redis-py can lose that.
        sending = asyncio.create_task(smtp.send(self.config, message))
        try:
            while True:
                done, _ = await asyncio.wait({sending}, timeout=self.claim_idle_ms / 3000)
                if done:
                    return sending.result()
                try:
                    await self.queue.hold(self.consumer, [entry_id])
                except Exception as exc:
                    log.warning("mail %s: could not renew the claim: %r", entry_id, exc)
        finally:
            if not sending.done():
                sending.cancel()
                await asyncio.wait({sending}, timeout=1.0)

    async def _housekeeping(self) -> None:
        now = asyncio.get_running_loop().time()
        if now >= self._prune_at:
            self._prune_at = now + PRUNE_EVERY_S
            await self.queue.prune_consumers(idle_ms=PRUNE_IDLE_MS)
        if now - self._depth_read_at < DEPTH_EVERY_S:
            return
        self._depth_read_at = now
        self.depth = depth = await self.queue.depth()
        last = self._depth_logged
        if last is None or depth != last[0] or (depth and now - last[1] >= DEPTH_LOG_EVERY_S):
            self._depth_logged = (depth, now)
            log.info("mail queue: %d waiting", depth)

    def _backoff(self, failures: int) -> float:
        """Doubling pauses, capped; jittered so that many senders do not retry in step."""
        pause = min(self.max_backoff_s, self.min_backoff_s * 2.0 ** max(failures - 1, 0))
        return pause * random.uniform(0.5, 1.0)

    def _redis_failed(self, exc: Exception) -> float:
        self.redis_errors += 1
        self._redis_failures += 1
        if "NOGROUP" in str(exc):
            # The stream was deleted (a flushed or restarted Redis): recreate it and go on.
            self._group_ready = False
            self._cursor = "0-0"
            log.warning("mail queue: the stream or its group is gone; recreating it")
            return 0.0 if self._redis_failures == 1 else self._backoff(self._redis_failures)
        pause = self._backoff(self._redis_failures)
        if isinstance(exc, _OUTAGE):
            log.warning("mail queue: Redis unavailable (%r); retrying in %.1f s", exc, pause)
        else:
            log.exception("mail sender: unexpected error; retrying in %.1f s", pause)
        return pause
