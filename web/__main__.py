"""`python -m web`: read settings, start local Redis/MongoDB if no URLs are set, serve with uvicorn."""

from __future__ import annotations

import sys

import uvicorn

from web.app import create_app
from web.settings import Settings, SettingsError


def main() -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if settings.embedded:
        print("error: REDIS_URL and MONGODB_URL: both required for now", file=sys.stderr)
        return 2
    app = create_app(settings)
    # proxy_headers off: the client address comes from TRUSTED_PROXIES, in the app, or not at all.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        proxy_headers=False,
        server_header=False,
        log_level="info",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
