"""Mail: the sealed Redis queue, the background sender against a real SMTP server, the catcher."""

from __future__ import annotations

import asyncio
import logging
import secrets
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest
from redis import Redis

from tests.conftest import SECRET
from tests.helpers.smtp import MailServer, links
from web.crypto import SecretBox
from web.embedded import EmbeddedError, Server, bundled_redis_binary, start_redis
from web.mail import MailQueue, MailSender, SmtpConfig, build_message, parse_smtp_url, send
from web.mail.catcher import read_maildir, start_mail_catcher
from web.mail.smtp import classify
from web.redis import RedisClient, connect_redis

# Small enough that retries and claims happen within a test, large enough for a loaded machine.
FAST: dict[str, Any] = {"claim_idle_ms": 300, "block_ms": 100, "min_backoff_s": 0.02, "max_backoff_s": 0.2}


async def eventually(condition: Callable[[], bool | Awaitable[bool]], within: float = 10.0) -> None:
    """Poll a condition until it holds; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if await result if isinstance(result, Awaitable) else result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition still false after {within} s")
        await asyncio.sleep(0.01)


def mail(
    subject: str = "Reset your password", text: str = "Hello", to: str = "ada@example.com"
) -> EmailMessage:
    return build_message(
        sender="Sessions <no-reply@example.com>", to=to, subject=subject, text=text, html=f"<p>{text}</p>"
    )


@pytest.fixture
async def aredis(redis: Redis, redis_server: Server) -> AsyncIterator[RedisClient]:
    """The app's kind of client (short timeouts) on an emptied Redis."""
    client = connect_redis(redis_server.url, cluster=False)
    yield client
    await client.aclose()


@pytest.fixture
def box() -> SecretBox:
    return SecretBox((SECRET.encode(),), "mail-queue")


@pytest.fixture
def queue(aredis: RedisClient, box: SecretBox) -> MailQueue:
    return MailQueue(aredis, box)


@pytest.fixture
def smtp() -> Iterator[MailServer]:
    with MailServer() as server:
        yield server


@pytest.fixture
async def senders(smtp: MailServer) -> AsyncIterator[Callable[..., MailSender]]:
    """Make started senders on fast settings; all are stopped at the end."""
    made: list[MailSender] = []

    def make(queue: MailQueue, config: SmtpConfig | None = None, **options: Any) -> MailSender:
        sender = MailSender(queue, config or smtp.config(), **{**FAST, **options})
        sender.start()
        made.append(sender)
        return sender

    yield make
    for sender in made:
        await sender.stop()


def _empty(queue: MailQueue) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await queue.depth() == 0

    return check


def pending(redis: Redis) -> int:
    return int(redis.xpending("mail:q", "senders")["pending"])


# Delivery


async def test_queued_mail_is_delivered_with_both_parts_and_whole_links(
    queue: MailQueue, smtp: MailServer, senders: Callable[..., MailSender], redis: Redis
) -> None:
    token = secrets.token_urlsafe(32)
    # Longer than a mail line (78): it must still arrive in one piece in the plain part.
    link = f"https://example.com/reset/{token}?next=/account/security&utm_campaign={'x' * 60}"
    message = build_message(
        sender="Sessions <no-reply@example.com>",
        to="ada@example.com",  # an address alone: build_message never parses header text
        subject="Réinitialiser votre mot de passe",
        text=f"Hello Ada,\n\nReset your password here:\n{link}\n\nIt works for 30 minutes.\n",
        html=f'<p>Hello Ada,</p><p><a href="{link}">Reset your password</a></p>',
    )
    sender = senders(queue)
    await queue.enqueue(message, recipient_tag="tag-ada")

    (got,) = await smtp.wait_for(1)
    assert got.rcpt_tos == ["ada@example.com"]
    assert got.mail_from == "no-reply@example.com"
    assert got.subject == "Réinitialiser votre mot de passe"
    assert got.message.get_content_type() == "multipart/alternative"
    assert links(got) == [link]
    assert f'href="{link}"' in got.html
    assert got.message["Message-ID"] and got.message["Date"]
    await eventually(lambda: sender.sent == 1)
    await eventually(_empty(queue))
    assert pending(redis) == 0 and redis.xlen("mail:q") == 0


# SMTP outage


async def test_smtp_outage_neither_fails_nor_slows_enqueue_and_mail_goes_when_it_returns(
    queue: MailQueue, smtp: MailServer, senders: Callable[..., MailSender]
) -> None:
    smtp.stop()
    sender = senders(queue)
    await queue.ensure_group()  # what the running sender does anyway; kept out of the timing

    started = time.perf_counter()
    await queue.enqueue(mail(), recipient_tag="tag-ada")
    assert time.perf_counter() - started < 0.1

    # Tried and retried while SMTP is down, and still queued.
    await eventually(lambda: sender.failed_transient >= 2)
    assert await queue.depth() == 1
    assert smtp.received == []

    smtp.start()
    (got,) = await smtp.wait_for(1)
    assert got.subject == "Reset your password"
    await eventually(_empty(queue))
    assert sender.sent == 1 and sender.failed_permanent == 0


# Several senders


async def test_two_senders_deliver_each_of_50_messages_exactly_once(
    queue: MailQueue, smtp: MailServer, senders: Callable[..., MailSender], redis: Redis
) -> None:
    for i in range(25):
        await queue.enqueue(mail(subject=f"message {i}"), recipient_tag=f"tag-{i}")
    first, second = senders(queue), senders(queue)
    for i in range(25, 50):
        await queue.enqueue(mail(subject=f"message {i}"), recipient_tag=f"tag-{i}")

    await smtp.wait_for(50)
    await eventually(_empty(queue))
    await first.stop()
    await second.stop()

    subjects = sorted(r.subject for r in smtp.received)
    assert subjects == sorted(f"message {i}" for i in range(50))
    assert first.sent + second.sent == 50
    assert pending(redis) == 0


async def test_a_slow_delivery_is_not_claimed_by_another_sender(
    queue: MailQueue, smtp: MailServer, senders: Callable[..., MailSender]
) -> None:
    # The server takes longer than claim_idle_ms: the sender renews its claim meanwhile.
    smtp.data_delay = 1.0
    first, second = senders(queue), senders(queue)
    await queue.enqueue(mail(), recipient_tag="tag-ada")
    await smtp.wait_for(1)
    await eventually(_empty(queue))
    await first.stop()
    await second.stop()
    assert len(smtp.received) == 1
    assert first.sent + second.sent == 1


# A sender that died


async def test_mail_taken_by_a_sender_that_died_is_sent_by_another_after_claim_idle(
    queue: MailQueue, smtp: MailServer, senders: Callable[..., MailSender], redis: Redis
) -> None:
    await queue.ensure_group()
    await queue.enqueue(mail(), recipient_tag="tag-ada")
    assert len(await queue.read("crashed-host-1-abc", count=1, block_ms=0)) == 1
    taken_at = time.monotonic()

    senders(queue)
    await smtp.wait_for(1)
    assert time.monotonic() - taken_at >= FAST["claim_idle_ms"] / 1000
    await eventually(_empty(queue))
    assert len(smtp.received) == 1
    assert pending(redis) == 0


async def test_a_sender_cancelled_mid_send_leaves_the_message_for_another(
    queue: MailQueue, smtp: MailServer, senders: Callable[..., MailSender], redis: Redis
) -> None:
    # Stuck before DATA, so the server never gets the message from the doomed sender.
    smtp.rcpt_delay = 5.0
    await queue.ensure_group()
    doomed = senders(queue)
    await queue.enqueue(mail(), recipient_tag="tag-ada")
    await eventually(lambda: pending(redis) == 1)
    # Give up on it almost at once, as a crash would: its delivery never completes.
    await doomed.stop(grace_s=0.2)
    smtp.rcpt_delay = 0.0

    senders(queue)
    await smtp.wait_for(1)
    await eventually(_empty(queue))
    assert doomed.sent == 0 and len(smtp.received) == 1


# Encryption at rest


def dump(redis: Redis) -> str:
    """Every key and value in Redis, read the way its type is read."""
    out = []
    for key in redis.scan_iter():
        kind = redis.type(key)
        value: Any
        if kind == "string":
            value = redis.get(key)
        elif kind == "hash":
            value = redis.hgetall(key)
        elif kind == "list":
            value = redis.lrange(key, 0, -1)
        elif kind == "set":
            value = redis.smembers(key)
        elif kind == "zset":
            value = redis.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            groups = redis.xinfo_groups(key)
            consumers = [redis.xinfo_consumers(key, g["name"]) for g in groups]
            value = [redis.xrange(key), groups, consumers]
        else:
            raise AssertionError(f"unexpected type {kind!r} for {key!r}")
        name = key if isinstance(key, str) else key.decode()
        out.append(f"{name} {kind} {value!r}")
    return "\n".join(out)


async def test_redis_never_holds_the_message_in_clear(queue: MailQueue, redis: Redis) -> None:
    token = secrets.token_urlsafe(32)
    await queue.ensure_group()
    await queue.enqueue(
        mail(subject="Your sign-in code", text=f"https://example.com/reset/{token}", to="ada@example.org"),
        recipient_tag="tag-ada",
    )
    await queue.enqueue(mail(text=token), recipient_tag="tag-bob")
    # One of them taken by a sender: the pending list says nothing more either.
    await queue.read("some-sender", count=1, block_ms=0)

    everything = dump(redis)
    assert "mail:q stream" in everything and "tag-ada" in everything
    for secret in (token, token[:16], "ada@example.org", "sign-in code", "Reset your password"):
        assert secret not in everything
    entries = redis.xrange("mail:q")
    assert entries is not None and len(entries) == 2
    assert all(set(fields or ()) == {"m", "c", "to"} for _, fields in entries)


# Failures


async def test_a_permanent_refusal_drops_the_message_and_counts_it(
    queue: MailQueue, smtp: MailServer, senders: Callable[..., MailSender], redis: Redis
) -> None:
    smtp.rcpt_replies["nobody@example.com"] = "550 5.1.1 No such user"
    sender = senders(queue)
    await queue.enqueue(mail(to="nobody@example.com"), recipient_tag="tag-nobody")
    await queue.enqueue(mail(subject="after", to="ada@example.com"), recipient_tag="tag-ada")

    (got,) = await smtp.wait_for(1)
    assert got.subject == "after"
    await eventually(_empty(queue))
    assert sender.failed_permanent == 1 and sender.failed_transient == 0 and sender.sent == 1
    assert pending(redis) == 0


async def test_a_refused_message_body_is_dropped(
    queue: MailQueue, smtp: MailServer, senders: Callable[..., MailSender]
) -> None:
    smtp.data_reply = "554 5.7.1 Rejected as spam"
    sender = senders(queue)
    await queue.enqueue(mail(), recipient_tag="tag-ada")
    await eventually(lambda: sender.failed_permanent == 1)
    await eventually(_empty(queue))
    assert smtp.received == []


async def test_a_temporary_refusal_is_retried_until_accepted(
    queue: MailQueue, smtp: MailServer, senders: Callable[..., MailSender]
) -> None:
    smtp.rcpt_replies["*"] = "451 4.7.1 Greylisted, try again later"
    sender = senders(queue)
    await queue.enqueue(mail(), recipient_tag="tag-ada")
    await eventually(lambda: sender.failed_transient >= 2)
    assert await queue.depth() == 1

    smtp.rcpt_replies.clear()
    await smtp.wait_for(1)
    await eventually(_empty(queue))
    assert sender.failed_permanent == 0


async def test_failures_are_logged_one_line_each_without_the_password(
    queue: MailQueue, smtp: MailServer, senders: Callable[..., MailSender], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="web.mail")
    # The server offers no AUTH: every attempt fails after connecting, user name in hand.
    config = smtp.config(username="mailer", password="hunter2-s3cret")
    assert "hunter2" not in repr(config) + str(config)
    sender = senders(queue, config)
    await queue.enqueue(mail(), recipient_tag="tag-ada")
    await eventually(lambda: sender.failed_transient >= 2)

    failures = [r for r in caplog.records if "will retry" in r.getMessage()]
    assert len(failures) >= 2
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in failures)
    assert "hunter2" not in caplog.text


async def test_mail_older_than_max_age_is_dropped(
    queue: MailQueue, smtp: MailServer, senders: Callable[..., MailSender]
) -> None:
    sender = senders(queue, max_age_s=3600, clock=lambda: time.time() + 2 * 3600)
    await queue.enqueue(mail(), recipient_tag="tag-ada")
    await eventually(lambda: sender.expired == 1)
    await eventually(_empty(queue))
    assert smtp.received == []


async def test_mail_sealed_under_a_retired_key_is_dropped(
    aredis: RedisClient, queue: MailQueue, smtp: MailServer, senders: Callable[..., MailSender]
) -> None:
    other = MailQueue(aredis, SecretBox((b"another secret key, long retired",), "mail-queue"))
    await other.enqueue(mail(), recipient_tag="tag-ada")
    sender = senders(queue)
    await eventually(lambda: sender.failed_permanent == 1)
    await eventually(_empty(queue))
    assert smtp.received == []


async def test_the_sender_survives_a_redis_outage(
    box: SecretBox, smtp: MailServer, senders: Callable[..., MailSender], tmp_path: Any
) -> None:
    server = start_redis(log_path=tmp_path / "redis.log")
    client = connect_redis(server.url, cluster=False)
    try:
        queue = MailQueue(client, box)
        sender = senders(queue)
        await queue.enqueue(mail(subject="before"), recipient_tag="tag-ada")
        await smtp.wait_for(1)

        server.stop()
        await eventually(lambda: sender.redis_errors >= 2)
        assert sender.running
        # Back, and empty (no persistence here): the sender recreates the stream and its group.
        server = start_redis(port=server.port, log_path=tmp_path / "redis.log")
        await queue.enqueue(mail(subject="after"), recipient_tag="tag-ada")
        await smtp.wait_for(2)
        assert [r.subject for r in smtp.received] == ["before", "after"]
        assert sender.running
        await sender.stop()
    finally:
        await client.aclose()
        server.stop()


# Deleting a recipient's mail


async def test_delete_for_removes_a_recipients_queued_mail_but_the_one_kept(
    queue: MailQueue, smtp: MailServer, senders: Callable[..., MailSender], redis: Redis
) -> None:
    await queue.ensure_group()
    await queue.enqueue(mail(subject="ada 1"), recipient_tag="tag-ada")
    await queue.read("crashed-host-1-abc", count=1, block_ms=0)  # even one a sender had taken
    await queue.enqueue(mail(subject="ada 2"), recipient_tag="tag-ada")
    await queue.enqueue(mail(subject="bob"), recipient_tag="tag-bob")
    goodbye = await queue.enqueue(mail(subject="account deleted"), recipient_tag="tag-ada")

    assert await queue.delete_for("tag-ada", except_ids={goodbye}) == 2
    assert await queue.depth() == 2
    assert pending(redis) == 0
    assert await queue.delete_for("tag-nobody") == 0

    senders(queue)
    await smtp.wait_for(2)
    await eventually(_empty(queue))
    assert sorted(r.subject for r in smtp.received) == ["account deleted", "bob"]


# SMTP_URL


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example.com", SmtpConfig("mail.example.com", 25)),
        ("smtp://mail.example.com:2525", SmtpConfig("mail.example.com", 2525)),
        ("smtps://mail.example.com", SmtpConfig("mail.example.com", 465, implicit_tls=True)),
        (
            "smtp://ap%40p:p%3Ass%2Fw%40rd@mail.example.com:587?starttls=1",
            SmtpConfig("mail.example.com", 587, "ap@p", "p:ss/w@rd", require_starttls=True),
        ),
        ("SMTP://[::1]:1025/?starttls=0&timeout=2.5", SmtpConfig("::1", 1025, timeout=2.5)),
    ],
)
def test_parse_smtp_url_accepts(url: str, expected: SmtpConfig) -> None:
    assert parse_smtp_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://mail.example.com", "expected smtp:// or smtps://"),
        ("mail.example.com:25", "expected smtp:// or smtps://"),
        ("smtp://", "missing host"),
        ("smtp://user:pw@:25", "missing host"),
        ("smtp://mail.example.com:99999", "port"),
        ("smtp://mail.example.com:abc", "port"),
        ("smtp://user@mail.example.com", "needs a password"),
        ("smtps://mail.example.com?starttls=1", "starttls=1 is for smtp://"),
        ("smtp://mail.example.com?starttls=maybe", "starttls must be 1 or 0"),
        ("smtp://mail.example.com?tls=1", "unknown option 'tls'"),
        ("smtp://mail.example.com?timeout=0", "timeout"),
        ("smtp://mail.example.com/path", "unexpected path"),
    ],
)
def test_parse_smtp_url_rejects(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_smtp_url(url)
    assert "pw" not in str(caught.value)


def refused(code: int, message: str) -> aiosmtplib.SMTPRecipientRefused:
    return aiosmtplib.SMTPRecipientRefused(code, message, "ada@example.com")


@pytest.mark.parametrize(
    ("error", "permanent"),
    [
        (
            aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "no such user", "a@b")]),
            True,
        ),
        (
            aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(450, "mailbox busy", "a@b")]),
            False,
        ),
        (aiosmtplib.SMTPSenderRefused(553, "sender not allowed", "a@b"), True),
        (aiosmtplib.SMTPDataError(554, "rejected as spam"), True),
        (aiosmtplib.SMTPDataError(451, "try again later"), False),
        # The account or the server is wrong, not the message: kept until it is fixed.
        (aiosmtplib.SMTPAuthenticationError(535, "bad credentials"), False),
        (aiosmtplib.SMTPConnectError("connection refused"), False),
        (aiosmtplib.SMTPReadTimeoutError("timed out"), False),
        (aiosmtplib.SMTPServerDisconnected("gone"), False),
        (ConnectionRefusedError(111, "refused"), False),
        (ValueError("address contains characters not permitted"), True),
    ],
)
def test_failures_are_sorted_into_drop_or_retry(error: Exception, permanent: bool) -> None:
    assert classify(error).permanent is permanent


def test_smtp_config_never_shows_the_password() -> None:
    config = parse_smtp_url("smtp://mailer:hunter2@mail.example.com:587")
    assert "hunter2" not in repr(config) and "hunter2" not in str(config)
    assert str(config) == "smtp://mailer@mail.example.com:587"


# The development catcher


async def test_the_catcher_process_keeps_mail_in_a_private_maildir(tmp_path: Any) -> None:
    maildir = tmp_path / "mail"
    catcher = start_mail_catcher(maildir, log_path=tmp_path / "catcher.log")
    try:
        token = secrets.token_urlsafe(16)
        await send(
            parse_smtp_url(catcher.url),
            mail(subject="Vérifiez votre adresse", text=f"https://example.com/verify/{token}"),
        )
        await send(parse_smtp_url(catcher.url), mail(subject="second"))
        first, second = read_maildir(maildir)
    finally:
        catcher.stop()
    assert catcher.process.returncode == 0  # SIGTERM is a clean exit
    assert stat.S_IMODE(maildir.stat().st_mode) == 0o700
    assert (first.subject, second.subject) == ("second", "Vérifiez votre adresse")
    assert second.sender == "Sessions <no-reply@example.com>" and second.to == "ada@example.com"
    assert second.text.strip() == f"https://example.com/verify/{token}"
    assert second.html.strip() == f"<p>https://example.com/verify/{token}</p>"
    assert second.date is not None and second.received is not None
    assert read_maildir(tmp_path / "nothing here") == []


# The oldest Redis the app supports


@pytest.fixture(scope="module")
def redis_62() -> Iterator[Server]:
    try:
        binary = bundled_redis_binary()
    except EmbeddedError as exc:
        pytest.skip(str(exc))
    server = start_redis(binary=binary)
    yield server
    server.stop()


async def test_claims_and_deletes_work_on_redis_6_2(
    redis_62: Server, box: SecretBox, smtp: MailServer, senders: Callable[..., MailSender]
) -> None:
    client = connect_redis(redis_62.url, cluster=False)
    try:
        await client.flushall()
        queue = MailQueue(client, box)
        await queue.ensure_group()
        await queue.enqueue(mail(subject="taken, then its sender died"), recipient_tag="tag-ada")
        await queue.enqueue(mail(subject="taken, then deleted"), recipient_tag="tag-bob")
        await queue.read("crashed-host-1-abc", count=2, block_ms=0)
        # 6.2 keeps a deleted entry in the pending list; a claim must not choke on it.
        entries = await client.xrange("mail:q")
        assert entries is not None and entries[1][0] is not None
        await client.xdel("mail:q", entries[1][0])

        senders(queue)
        (got,) = await smtp.wait_for(1)
        assert got.subject == "taken, then its sender died"
        await eventually(_empty(queue))
        await eventually(lambda: _pending_62(client))
    finally:
        await client.aclose()


async def _pending_62(client: RedisClient) -> bool:
    info = await client.xpending("mail:q", "senders")
    return int(info["pending"]) == 0


def test_message_ids_are_unique_and_dated() -> None:
    one, two = mail(), mail()
    assert one["Message-ID"] != two["Message-ID"]
    assert one["Message-ID"].endswith("@example.com>")
    assert one["Auto-Submitted"] == "auto-generated"
