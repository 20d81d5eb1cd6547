"""Settings: read once from the environment, validated, frozen, passed in."""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MIN_KEY_LENGTH = 32


# Every environment variable the app reads (from_env refuses to read one not listed here), so
# tests that start the app can clear them all without keeping a copy of the list.
VARIABLES = (
    "REDIS_URL", "REDIS_CLUSTER", "MONGODB_URL", "SECRET_KEY", "DATA_DIR", "HOST", "PORT",
    "SESSION_IDLE_TIMEOUT", "SESSION_ABSOLUTE_TIMEOUT", "COOKIE_SECURE", "BCRYPT_ROUNDS",
    "BCRYPT_QUEUE_LIMIT", "PASSWORD_MIN_LENGTH", "TRUSTED_PROXIES", "LOGIN_MAX_FAILURES",
    "LOGIN_ACCOUNT_MAX_FAILURES", "LOGIN_IP_MAX_FAILURES", "LOGIN_WINDOW", "SIGNUP_IP_LIMIT",
    "SIGNUP_LIMIT", "AUDIT_LOG_LEVEL", "SMTP_URL", "MAIL_FROM", "PUBLIC_URL", "PASSWORD_RESET_TTL",
    "EMAIL_VERIFY_TTL", "REDIS_WAIT_REPLICAS", "REDIS_WAIT_TIMEOUT", "METRICS_ALLOW", "METRICS_TOKEN",
    "WEB_CONCURRENCY", "REAUTH_TIMEOUT", "REMEMBER_IDLE_TIMEOUT", "REMEMBER_ABSOLUTE_TIMEOUT",
)  # fmt: skip
LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    redis_url: str | None = None
    mongodb_url: str | None = None
    secret_keys: tuple[bytes, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    redis_cluster: bool = False
    session_idle_timeout: int = 1800
    session_absolute_timeout: int = 28800
    cookie_secure: bool = True
    bcrypt_rounds: int = 12
    password_min_length: int = 12
    trusted_proxies: tuple[Network, ...] = ()
    login_max_failures: int = 10
    login_ip_max_failures: int = 100
    login_window: int = 900
    login_account_max_failures: int = 100
    signup_ip_limit: int = 20
    signup_limit: int = 1000
    bcrypt_queue_limit: int = 0  # 0: about two seconds of hashing (passwords.py)
    smtp_url: str | None = None  # None: mail is queued but nothing sends it (some tests)
    mail_from: str = "Sessions <no-reply@localhost>"
    public_url: str = "http://localhost:8000"
    password_reset_ttl: int = 1800
    email_verify_ttl: int = 86400
    dev_inbox: Path | None = None  # the embedded mail catcher's Maildir, served at /dev/mail
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = 500
    metrics_allow: tuple[Network, ...] = LOOPBACK
    metrics_token: str | None = None
    workers: int = 1
    reauth_timeout: int = 600
    remember_idle_timeout: int = 604800
    remember_absolute_timeout: int = 2592000
    audit_log_level: int = logging.INFO
    data_dir: Path = field(default_factory=lambda: Path(".data"))
    generated_secret: bool = False  # the key came from DATA_DIR (embedded mode), not SECRET_KEY

    @property
    def embedded(self) -> bool:
        """Whether some service has no URL, so `python -m web` must start it itself."""
        return self.redis_url is None or self.mongodb_url is None or self.smtp_url is None

    @classmethod
    def for_production(cls) -> Settings:
        """The settings when nothing may be started or defaulted: every service URL set."""
        settings = cls.from_env()
        urls = {
            "REDIS_URL": settings.redis_url,
            "MONGODB_URL": settings.mongodb_url,
            "SMTP_URL": settings.smtp_url,
        }
        missing = [name for name, url in urls.items() if url is None]
        if missing:
            raise SettingsError(
                f"{missing[0]}: required here ({', '.join(urls)}; python -m web starts local ones)"
            )
        return settings

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and check every setting, raising SettingsError naming the first bad one."""
        env = os.environ if environ is None else environ

        def get(name: str, parse: Callable[[str], T], default: T) -> T:
            if name not in VARIABLES:
                raise RuntimeError(f"{name} is read but not listed in VARIABLES")
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                return parse(raw)
            except ValueError as exc:
                raise SettingsError(f"{name}: {exc}") from None

        redis_url = get("REDIS_URL", _redis_url, None)
        mongodb_url = get("MONGODB_URL", _mongodb_url, None)
        data_dir = get("DATA_DIR", Path, Path(".data"))
        # With local Redis or MongoDB this is development: a generated key, plain-http cookies.
        local = redis_url is None or mongodb_url is None
        no_keys: tuple[bytes, ...] = ()
        keys = get("SECRET_KEY", _secret_keys, no_keys)
        if not keys:
            if not local:
                raise SettingsError(
                    "SECRET_KEY: required (one or more comma-separated keys of 32+ characters)"
                )
            # Development only: a key made once and kept, so sessions survive restarts.
            keys = (_stored_secret(data_dir),)
        idle = get("SESSION_IDLE_TIMEOUT", _positive, 1800)
        port = get("PORT", _port, 8000)
        smtp_url = get("SMTP_URL", _smtp_url, None)
        # Development serves http://localhost (not 127.0.0.1: passkeys need a domain name).
        public_url = get("PUBLIC_URL", _public_url, None)
        workers = get("WEB_CONCURRENCY", _positive, 1)
        sentinel = redis_url is not None and redis_url.startswith("redis+sentinel")
        settings = cls(
            redis_url=redis_url,
            mongodb_url=mongodb_url,
            secret_keys=keys,
            host=get("HOST", str, "127.0.0.1"),
            port=port,
            redis_cluster=get("REDIS_CLUSTER", _flag, False),
            session_idle_timeout=idle,
            session_absolute_timeout=get("SESSION_ABSOLUTE_TIMEOUT", _positive, 28800),
            # Embedded mode serves plain http://127.0.0.1, where a Secure cookie would never come back.
            cookie_secure=get("COOKIE_SECURE", _flag, not local),
            bcrypt_rounds=get("BCRYPT_ROUNDS", _rounds, 12),
            password_min_length=get("PASSWORD_MIN_LENGTH", _positive, 12),
            trusted_proxies=get("TRUSTED_PROXIES", _networks, ()),
            login_max_failures=get("LOGIN_MAX_FAILURES", _positive, 10),
            login_ip_max_failures=get("LOGIN_IP_MAX_FAILURES", _positive, 100),
            login_window=get("LOGIN_WINDOW", _positive, 900),
            login_account_max_failures=get("LOGIN_ACCOUNT_MAX_FAILURES", _positive, 100),
            signup_ip_limit=get("SIGNUP_IP_LIMIT", _positive, 20),
            signup_limit=get("SIGNUP_LIMIT", _positive, 1000),
            bcrypt_queue_limit=get("BCRYPT_QUEUE_LIMIT", _positive, 0),
            audit_log_level=get("AUDIT_LOG_LEVEL", _log_level, logging.INFO),
            data_dir=data_dir,
            generated_secret="SECRET_KEY" not in env or not env["SECRET_KEY"].strip(),
            smtp_url=smtp_url,
            mail_from=get("MAIL_FROM", _mail_from, "Sessions <no-reply@localhost>"),
            public_url=public_url or f"http://localhost:{port}",
            password_reset_ttl=get("PASSWORD_RESET_TTL", _positive, 1800),
            email_verify_ttl=get("EMAIL_VERIFY_TTL", _positive, 86400),
            # A sign-in acknowledged by a master that dies at once survives only on a replica.
            redis_wait_replicas=get("REDIS_WAIT_REPLICAS", _non_negative, 1 if sentinel else 0),
            redis_wait_timeout_ms=get("REDIS_WAIT_TIMEOUT", _wait_timeout, 500),
            metrics_allow=get("METRICS_ALLOW", _allow, LOOPBACK),
            metrics_token=get("METRICS_TOKEN", _token, None),
            workers=workers,
            reauth_timeout=get("REAUTH_TIMEOUT", _positive, 600),
            remember_idle_timeout=get("REMEMBER_IDLE_TIMEOUT", _positive, 604800),
            remember_absolute_timeout=get("REMEMBER_ABSOLUTE_TIMEOUT", _positive, 2592000),
        )
        if settings.redis_cluster and settings.redis_wait_replicas:
            raise SettingsError("REDIS_WAIT_REPLICAS: not with REDIS_CLUSTER=1 (WAIT is per node there)")
        # Checked last, so that a malformed setting is named before a missing one.
        if public_url is None and not local:
            raise SettingsError("PUBLIC_URL: required (the origin of the links in mails, https://...)")
        if workers > 1 and settings.embedded:
            # Each worker builds its app from the environment, which has no embedded server's URL.
            raise SettingsError(
                "WEB_CONCURRENCY: more than 1 worker needs REDIS_URL, MONGODB_URL and SMTP_URL"
            )
        return settings


def _redis_url(raw: str) -> str:
    scheme = urlsplit(raw).scheme
    if scheme in ("redis+sentinel", "redis+sentinels"):
        from web.sentinel import parse_sentinel_url

        parse_sentinel_url(raw)  # raises ValueError with what is wrong
        return raw
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError("expected redis://, rediss://, unix:// or redis+sentinel:// URL")
    return raw


def _smtp_url(raw: str) -> str:
    from web.mail.smtp import parse_smtp_url

    parse_smtp_url(raw)  # raises ValueError with what is wrong
    return raw


def _public_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an origin such as https://app.example.com")
    if parts.path.strip("/") or parts.query or parts.fragment or parts.username:
        raise ValueError("expected an origin only: scheme, host and port, no path")
    return f"{parts.scheme}://{parts.netloc.lower()}"


def _mail_from(raw: str) -> str:
    _, address = parseaddr(raw)
    if "@" not in address or any(c in raw for c in "\r\n"):
        raise ValueError("expected an address such as 'Sessions <no-reply@example.com>'")
    return raw


def _non_negative(raw: str) -> int:
    value = _int(raw)
    if value < 0:
        raise ValueError(f"expected 0 or more, not {raw!r}")
    return value


def _wait_timeout(raw: str) -> int:
    value = _positive(raw)
    if value > 750:  # the WAIT must end well inside the Redis client's 1 s socket timeout
        raise ValueError("expected 1 to 750 milliseconds")
    return value


def _allow(raw: str) -> tuple[Network, ...]:
    return () if raw.lower() == "none" else _networks(raw)  # none: the bearer token only


def _token(raw: str) -> str:
    if len(raw) < MIN_KEY_LENGTH:
        raise ValueError(f"use at least {MIN_KEY_LENGTH} random characters")
    return raw


def _mongodb_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("mongodb", "mongodb+srv"):
        raise ValueError("expected a mongodb:// or mongodb+srv:// URL")
    if not parts.path.strip("/"):
        raise ValueError("the database name is missing from the path (mongodb://host:27017/app)")
    return raw


def _secret_keys(raw: str) -> tuple[bytes, ...]:
    keys = tuple(k.strip() for k in raw.split(",") if k.strip())
    if any(len(k) < MIN_KEY_LENGTH for k in keys):
        raise ValueError(f"every key needs at least {MIN_KEY_LENGTH} characters")
    return tuple(k.encode() for k in keys)


def _flag(raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected 1/0, true/false, yes/no or on/off, not {raw!r}")


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"expected a whole number, not {raw!r}") from None


def _positive(raw: str) -> int:
    value = _int(raw)
    if value <= 0:
        raise ValueError(f"expected a positive whole number, not {raw!r}")
    return value


def _port(raw: str) -> int:
    value = _int(raw)
    if not 0 < value < 65536:
        raise ValueError(f"expected a port number, not {raw!r}")
    return value


def _rounds(raw: str) -> int:
    value = _int(raw)
    if not 4 <= value <= 31:
        raise ValueError("bcrypt takes 4 to 31 rounds")
    return value


def _networks(raw: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(n.strip(), strict=False) for n in raw.split(",") if n.strip())


def _log_level(raw: str) -> int:
    if raw.upper() == "OFF":
        return logging.CRITICAL + 10
    level = logging.getLevelNamesMapping().get(raw.upper())
    if level is None:
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or OFF")
    return level


def private_dir(path: Path) -> Path:
    """Make (or tighten) a folder only this user can enter: it holds keys and user data."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def _stored_secret(data_dir: Path) -> bytes:
    path = private_dir(data_dir) / "secret_key"
    if not path.exists():
        # Written whole under a temporary name, then linked into place: a reader never sees a
        # half-written key, and of two processes starting at once only one key wins (link
        # fails if the name exists), which both then read.
        temp = data_dir / f".secret_key.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            pass
        finally:
            temp.unlink()
    if path.stat().st_mode & 0o077:
        raise SettingsError(f"SECRET_KEY: {path} is readable by other users; chmod 600 it")
    key = path.read_text().strip()
    if len(key) < MIN_KEY_LENGTH:
        raise SettingsError(f"SECRET_KEY: {path} holds fewer than {MIN_KEY_LENGTH} characters")
    return key.encode()
