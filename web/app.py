"""create_app(settings): the Starlette app, its middleware, lifespan and error handlers."""

from __future__ import annotations

import gc
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from beanie import init_beanie
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Scope

from web import metrics
from web.activity import Event
from web.audit import audit, start_audit_log
from web.auth.users import User
from web.errors import HttpErrors
from web.routes import routes
from web.security import Security
from web.services import Services
from web.sessions import SessionMiddleware
from web.settings import Settings, SettingsError
from web.shell import Shell
from web.templating import compile_all


class App(Starlette):
    """Starlette, without its outermost ServerErrorMiddleware (the shell, first of the app's
    middleware, already turns every exception into a page) and with a lean HTTPException layer
    instead of its ExceptionMiddleware (web/errors.py): each layer costs every request."""

    def build_middleware_stack(self) -> ASGIApp:
        app: ASGIApp = HttpErrors(self.router)
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return app


def create_app(settings: Settings) -> Starlette:
    svc = Services.build(settings)

    def session_expired(scope: Scope, digest: str) -> None:
        client = scope.get("client")
        audit("session_expired", ip=client[0] if client else None, session=svc.signer.handle(digest))
        metrics.session_ended("expired")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        listener = start_audit_log(settings.audit_log_level)
        try:
            await init_beanie(database=svc.mongo.get_default_database(), document_models=[User, Event])
            await svc.start()
            compile_all()
            yield
        finally:
            metrics.flush()  # what this process counted since its last flush
            await svc.close()
            listener.stop()

    # /metrics depends on settings (who may read it), so it joins the table here.
    metrics_route = metrics.metrics_route(
        settings.metrics_allow,
        settings.metrics_token,
        readings={metrics.MAIL_QUEUE_DEPTH: svc.mail.queue.depth},
    )
    app = App(
        routes=[*routes, metrics_route],
        middleware=[
            Middleware(
                Shell,
                security=Security(
                    trusted_proxies=settings.trusted_proxies,
                    https=settings.cookie_secure,
                    audit_listener=svc.activity,
                ),
                metrics=metrics.RequestMetrics(),
            ),
            Middleware(
                SessionMiddleware,
                store=svc.store,
                signer=svc.signer,
                secure=settings.cookie_secure,
                on_expired=session_expired,
            ),
        ],
        lifespan=lifespan,
    )
    # No redirect from /login/ to /login: Starlette would build it as an absolute URL from the
    # request's Host and scheme (http behind a TLS proxy), where every other link is a path.
    app.router.redirect_slashes = False
    app.state.services = svc
    return app


# Objects the cyclic garbage collector lets pile up before a pass over the young ones (700 by
# default). Requests waiting on Redis hold their objects: with a few dozen of them in flight the
# young generation passed 700 with no garbage in it, so every pass found nothing, promoted what
# was alive, and the older passes then walked the whole heap: 11% of a signed-in page's CPU under
# load (40-50 µs a page on a 2-core EPYC). A pass now comes after a few hundred requests' worth.
GC_YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """Call once a server process has built its app, before it serves: what exists now (modules,
    templates, the app) is frozen out of every collection, and passes come less often."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def from_env() -> Starlette:
    """Uvicorn factory for production (each worker): a bad setting stops it with one line."""
    try:
        settings = Settings.for_production()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    app = create_app(settings)
    settle_heap()
    return app
