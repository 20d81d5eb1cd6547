"""`python -m web`: read settings, start local Redis/MongoDB if no URLs are set, serve with uvicorn."""

from __future__ import annotations

import dataclasses
import signal
import sys

from web.embedded import EmbeddedError, Server, redis_binary, redis_version, start_mongo, start_redis
from web.mail.catcher import start_mail_catcher
from web.server import serve
from web.settings import Settings, SettingsError, private_dir


def start_missing(settings: Settings, servers: list[Server]) -> tuple[Settings, list[str]]:
    """Start a local server for each service without a URL; return the settings and banner lines."""
    lines = []
    data = private_dir(settings.data_dir)
    if settings.redis_url is None:
        binary = redis_binary()
        version = redis_version(binary)
        # One folder per major version: Redis 6 and 7 keep their append-only files differently.
        folder = data / f"redis-{version.split('.')[0]}"
        servers.append(start_redis(folder, log_path=data / "redis.log"))
        settings = dataclasses.replace(settings, redis_url=servers[-1].url)
        lines.append(f"Redis     embedded   redis-server {version} ({binary}), data in {folder}/")
    else:
        lines.append("Redis     external   REDIS_URL")
    if settings.mongodb_url is None:
        folder = data / "mongodb"
        servers.append(start_mongo(folder, log_path=data / "mongodb.log"))
        settings = dataclasses.replace(settings, mongodb_url=servers[-1].url)
        lines.append(f"MongoDB   embedded   SecantusDB (MongoDB protocol), data in {folder}/")
    else:
        lines.append("MongoDB   external   MONGODB_URL")
    if settings.smtp_url is None:
        folder = data / "mail"
        servers.append(start_mail_catcher(folder, log_path=data / "mail.log"))
        settings = dataclasses.replace(settings, smtp_url=servers[-1].url, dev_inbox=folder)
        lines.append(f"Mail      embedded   caught in {folder}/, read it at {settings.public_url}/dev/mail")
    else:
        lines.append("Mail      external   SMTP_URL")
    return settings, lines


def banner(settings: Settings, lines: list[str]) -> str:
    url = settings.public_url
    out = ["", "  Sessions: development mode (embedded services)", ""]
    out += [f"  {line}" for line in lines]
    if settings.generated_secret:
        out.append(f"  Secret    generated once, kept in {settings.data_dir / 'secret_key'}")
    if not settings.cookie_secure:
        out.append("  Cookies   without Secure, so sign-in works on plain http")
    out += [
        "",
        f"  Open {url}",
        "",
        "  For development only. In production set REDIS_URL, MONGODB_URL, SECRET_KEY, SMTP_URL",
        "  and PUBLIC_URL.",
        "",
    ]
    return "\n".join(out)


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main() -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    servers: list[Server] = []
    # Uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again for its
    # previous handler. These turn that into a normal exit, so the finally block below runs.
    signal.signal(signal.SIGTERM, _exit_quietly)
    signal.signal(signal.SIGINT, _exit_quietly)
    try:
        if settings.embedded:
            try:
                settings, lines = start_missing(settings, servers)
            except EmbeddedError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(banner(settings, lines), file=sys.stderr, flush=True)
        serve(settings)
    finally:
        # Only after the app has closed its clients: the servers then shut down cleanly.
        for server in reversed(servers):
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
