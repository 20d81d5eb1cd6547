"""`python -m bench.mail`: how fast mail is queued and sent, and how soon it goes after SMTP returns.

A real redis-server and the tests' SMTP server (aiosmtpd), the app's own queue and sender with
their production settings. Prints: messages queued per second (what a request pays), messages
delivered per second by one sender, and the time from SMTP coming back to the first and the
last queued message being delivered.
"""

from __future__ import annotations

import asyncio
import time

from tests.helpers.smtp import MailServer
from web.crypto import SecretBox
from web.embedded import start_redis
from web.mail.message import build_message
from web.mail.queue import MailQueue
from web.redis import connect_redis
from web.services import _sender  # the app's own sender settings

COUNT = 500
KEY = (b"bench-secret-key-0123456789abcdef0123456789",)


def message(i: int) -> object:
    return build_message(
        sender="Sessions <no-reply@localhost>",
        to=f"user{i}@example.com",
        subject="Reset your password",
        text=f"Open https://app.example.com/password/reset/{i:043d} within 30 minutes.",
        html=f"<p>Open <a href='https://app.example.com/password/reset/{i:043d}'>the link</a></p>",
    )


async def run() -> None:
    redis_server = start_redis()
    redis = connect_redis(redis_server.url, cluster=False)
    queue = MailQueue(redis, SecretBox(KEY, "mail-queue"))
    try:
        with MailServer() as smtp:
            sender = _sender(queue, f"smtp://127.0.0.1:{smtp.port}")
            assert sender is not None
            started = time.perf_counter()
            for i in range(COUNT):
                await queue.enqueue(message(i), recipient_tag=f"t{i}")  # type: ignore[arg-type]
            queued = time.perf_counter() - started
            started = time.perf_counter()
            sender.start()
            await smtp.wait_for(COUNT, within=120)
            sent = time.perf_counter() - started
            each = queued / COUNT * 1e3
            print(f"queued: {COUNT / queued:,.0f} messages/s ({each:.2f} ms each, on the request's path)")
            print(f"sent:   {COUNT / sent:,.0f} messages/s by one sender (one SMTP connection per message)")

            # An outage: SMTP goes away, mail keeps coming, SMTP returns.
            smtp.stop()
            smtp.clear()
            for i in range(20):
                await queue.enqueue(message(i), recipient_tag=f"t{i}")  # type: ignore[arg-type]
            await asyncio.sleep(5)  # let the sender fail and back off, as it would in a real outage
            back = time.perf_counter()
            smtp.start()
            await smtp.wait_for(1, within=120)
            first = time.perf_counter() - back
            await smtp.wait_for(20, within=120)
            last = time.perf_counter() - back
            print(f"after SMTP came back: first message in {first:.1f} s, all 20 in {last:.1f} s")
            await sender.stop()
    finally:
        await redis.aclose()
        redis_server.stop()


if __name__ == "__main__":
    asyncio.run(run())
