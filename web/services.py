"""The app's long-lived parts, built once from Settings and reached from handlers."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pymongo import AsyncMongoClient
from starlette.requests import HTTPConnection

from web.activity import ActivityLog
from web.auth.devices import Devices
from web.auth.passkeys import RelyingParty
from web.auth.passwords import Passwords
from web.auth.throttle import Throttle
from web.auth.tokens import Tokens
from web.crypto import SecretBox
from web.mail.outbox import Outbox
from web.mail.queue import MailQueue
from web.mail.sender import MailSender
from web.mail.smtp import parse_smtp_url
from web.redis import RedisClient, connect_redis
from web.sessions import SessionStore, Signer
from web.settings import Settings

log = logging.getLogger(__name__)
TIMEOUT_S = 1.0  # as for Redis: an outage is reported within about a second
POOL_SIZE = 100


def connect_mongo(url: str) -> AsyncMongoClient[dict[str, Any]]:
    defaults: dict[str, Any] = {
        "serverSelectionTimeoutMS": int(TIMEOUT_S * 1000),
        "connectTimeoutMS": int(TIMEOUT_S * 1000),
        "socketTimeoutMS": int(TIMEOUT_S * 2000),
        "waitQueueTimeoutMS": int(TIMEOUT_S * 1000),
        "maxPoolSize": POOL_SIZE,
        "appname": "web",
    }
    # Options spelled out in MONGODB_URL win over these defaults (pymongo lets keywords win).
    in_url = url.lower()
    return AsyncMongoClient(url, **{k: v for k, v in defaults.items() if f"{k.lower()}=" not in in_url})


@dataclass
class Services:
    settings: Settings
    redis: RedisClient
    mongo: AsyncMongoClient[dict[str, Any]]
    store: SessionStore
    signer: Signer
    passwords: Passwords
    throttle: Throttle
    devices: Devices
    tokens: Tokens
    mail: Outbox
    sender: MailSender | None  # None without SMTP_URL: mail waits in the queue
    relying_party: RelyingParty | None  # None when PUBLIC_URL cannot have passkeys (an IP address)
    activity: ActivityLog

    @classmethod
    def build(cls, settings: Settings) -> Services:
        if settings.redis_url is None or settings.mongodb_url is None:
            raise ValueError("REDIS_URL and MONGODB_URL must be set (python -m web starts local ones)")
        redis = connect_redis(settings.redis_url, cluster=settings.redis_cluster)
        signer = Signer(settings.secret_keys)
        queue = MailQueue(redis, SecretBox(settings.secret_keys, "mail-queue"))
        return cls(
            settings=settings,
            redis=redis,
            mongo=connect_mongo(settings.mongodb_url),
            store=SessionStore(
                redis,
                idle_timeout=settings.session_idle_timeout,
                absolute_timeout=settings.session_absolute_timeout,
                wait_replicas=settings.redis_wait_replicas,
                wait_timeout_ms=settings.redis_wait_timeout_ms,
                remember_idle_timeout=settings.remember_idle_timeout,
                remember_absolute_timeout=settings.remember_absolute_timeout,
            ),
            signer=signer,
            passwords=Passwords(
                rounds=settings.bcrypt_rounds,
                min_length=settings.password_min_length,
                queue_limit=settings.bcrypt_queue_limit,
            ),
            throttle=Throttle(
                redis,
                max_failures=settings.login_max_failures,
                account_max_failures=settings.login_account_max_failures,
                ip_max_failures=settings.login_ip_max_failures,
                window=settings.login_window,
                signup_ip_limit=settings.signup_ip_limit,
                signup_limit=settings.signup_limit,
            ),
            devices=Devices(signer, secure=settings.cookie_secure),
            tokens=Tokens(redis),
            mail=Outbox(
                queue, sender=settings.mail_from, public_url=settings.public_url, keys=settings.secret_keys
            ),
            sender=_sender(queue, settings.smtp_url),
            relying_party=_relying_party(settings.public_url),
            activity=ActivityLog(),
        )

    async def start(self) -> None:
        await self.passwords.start()
        self.activity.start()
        if self.sender is not None:
            self.sender.start()

    async def close(self) -> None:
        if self.sender is not None:
            await self.sender.stop()  # before the Redis pool it needs is closed
        await self.activity.stop()  # before the MongoDB client it needs is closed
        await self.redis.aclose()
        await self.mongo.close()
        self.passwords.close()


def _sender(queue: MailQueue, smtp_url: str | None) -> MailSender | None:
    # Messages a sender failed to send are retried by any sender after 10 s; while SMTP fails,
    # a sender pauses at most 10 s between tries: mail goes out within seconds of SMTP's return.
    if smtp_url is None:
        return None
    return MailSender(queue, parse_smtp_url(smtp_url), claim_idle_ms=10_000, max_backoff_s=10.0)


def _relying_party(public_url: str) -> RelyingParty | None:
    try:
        return RelyingParty.from_public_url(public_url)
    except ValueError as exc:
        log.warning("passkeys are off: PUBLIC_URL %s: %s", public_url, exc)
        return None


def services(conn: HTTPConnection) -> Services:
    found: Services = conn.app.state.services
    return found
