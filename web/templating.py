"""Jinja environment and render(): a whole page, or one named block of it for htmx."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
from starlette.requests import Request
from starlette.responses import Response

from web.htmx import is_htmx
from web.sessions import EXPIRED
from web.urls import path_for, route_paths

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

# Every error status the app answers with a page or a fragment. htmx swaps exactly these
# (HTMX_CONFIG below is built from this table), so a new status cannot be forgotten there.
TITLES = {
    400: "Bad request",
    401: "Not signed in",
    403: "Not allowed",
    404: "Page not found",
    405: "Method not allowed",
    409: "Already taken",
    410: "Link no longer valid",
    413: "Too large",
    415: "Unsupported form encoding",
    422: "Unreadable form",
    429: "Too many attempts",
    431: "Headers too large",
    500: "Something went wrong",
    503: "Temporarily unavailable",
}

# htmx: no eval, no inline styles (CSP); swap our error fragments; keep no private page in
# localStorage.
HTMX_CONFIG = json.dumps(
    {
        "allowEval": False,
        "allowScriptTags": False,
        "includeIndicatorStyles": False,
        "selfRequestsOnly": True,
        "historyCacheSize": 0,
        "refreshOnHistoryMiss": True,
        "responseHandling": [
            {"code": "204", "swap": False},
            {"code": "[23]..", "swap": True},
            {"code": "(" + "|".join(str(s) for s in sorted(TITLES)) + ")", "swap": True},
            {"code": "...", "swap": False, "error": True},
        ],
    },
    separators=(",", ":"),
)


@jinja2.pass_context
def url_for(context: Mapping[str, Any], name: str, /, **params: Any) -> str:
    return path_for(context["request"], name, **params)


def mmss(seconds: int) -> str:
    """A countdown: "29:59", "7:59:59" past an hour, "6 d 23 h" past a day (as static/app.js)."""
    seconds = max(0, int(seconds))
    if seconds >= 86400:
        return f"{seconds // 86400} d {seconds % 86400 // 3600} h"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def duration(seconds: int) -> str:
    """Seconds as people say them: "45 s", "29 min", "7 h 59 min", "30 days"."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds >= 2 * 86400 and seconds % 86400 == 0:
        return f"{seconds // 86400} days"
    hours, minutes = divmod(seconds // 60, 60)
    if not hours:
        return f"{minutes} min"
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def isotime(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def ago(timestamp: int) -> str:
    """How long ago, roughly: "just now", "5 min ago", "3 h ago"."""
    seconds = int(time.time()) - int(timestamp)
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


class ConstantsLoader(jinja2.FileSystemLoader):
    """Templates with their constants written in, once, as they are loaded: every
    `{{ urls.<route name> }}` becomes that route's path, and `{{ htmx_config }}` and
    `{{ session_expired }}` their (escaped) text. A link or a constant then costs nothing at
    render time (no call, no lookup, no escaping), where url_for() was a third of a page's time.
    """

    _CONSTANT = re.compile(r"\{\{ (urls\.[a-z_]+|htmx_config|session_expired) \}\}")

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        from web.routes import routes  # the route table imports the views, which import this module

        source, filename, uptodate = super().get_source(environment, template)
        constants = {f"urls.{name}": path for name, path in route_paths(routes).items()}
        constants |= {"htmx_config": HTMX_CONFIG, "session_expired": EXPIRED}
        # A KeyError here names a route that does not exist, at start-up (compile_all).
        written = self._CONSTANT.sub(lambda m: str(markupsafe.escape(constants[m.group(1)])), source)
        return written, filename, uptodate


class Environment(jinja2.Environment):
    """Jinja's environment, with each template's globals a plain dict rather than a ChainMap over
    the environment's. Every render copies a template's globals into its context and every
    `{% from %}` compares their keys: through a ChainMap that was a third of the sign-in page's
    render. The globals are all set below, before any template is loaded.
    """

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        return {**self.globals, **(d or {})}


env = Environment(
    loader=ConstantsLoader(TEMPLATES),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,
    # A plain dict: Jinja's default LRU cache takes a lock on every lookup, twice a page (the
    # page, the base it extends); the templates are a fixed set, all loaded at start-up.
    cache_size=-1,
)
# Only what the templates use: Jinja's defaults (range, lipsum, cycler, …) would be copied into
# every render's context.
env.globals = {"url_for": url_for}
env.filters["mmss"] = mmss
env.filters["duration"] = duration
env.filters["isotime"] = isotime
env.filters["ago"] = ago


def compile_all() -> None:
    """Compile every template now, at start-up, rather than on some user's first request."""
    for name in env.list_templates(extensions=["html", "txt"]):
        env.get_template(name)


class Page(Response):
    """An HTML page or fragment: never cached, varying on HX-Request; headers built as bytes once."""

    media_type = "text/html"

    def __init__(self, html: str, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self.status_code = status
        self.background = None
        self.body = html.encode()
        self.raw_headers = [
            (b"content-length", str(len(self.body)).encode()),
            (b"content-type", b"text/html; charset=utf-8"),
            (b"cache-control", b"no-store"),
            (b"vary", b"HX-Request"),
        ]
        if headers:
            self.raw_headers += [
                (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()
            ]


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    block: str | None = None,
    oob: tuple[str, ...] = (),
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    anonymous_and_blank: bool = False,
) -> Response:
    """Render a page, or only `block` of it, plus `oob` blocks of base.html (out of band).

    anonymous_and_blank: the caller vouches that this is a page for a visitor who is not signed
    in, with nothing of theirs in it (an empty sign-in form): the same for everyone who gets it
    from this app, so it is rendered once per app and context, then served from memory.
    """
    # Only a session some handler already loaded: rendering never costs a Redis round trip.
    session = request.scope.get("session")
    if session is None or not session.loaded:
        session = None
    ctx = {
        "request": request,
        "htmx": is_htmx(request),
        "session": session,
        "user": session.user if session else None,
        "oob": False,
    }
    ctx.update(context or {})
    if not anonymous_and_blank or ctx["user"] is not None:
        return Page(_html(template, ctx, block, oob), status, headers)
    # Per app: another app in the same process (tests) may have other settings in its pages.
    pages: dict[str, str] | None = getattr(request.app.state, "blank_pages", None)
    if pages is None:
        pages = request.app.state.blank_pages = {}
    # repr tells 1 from True from "1", as the page would; a dict keeps its (per call site) order.
    varying = dict(ctx)
    del varying["request"], varying["session"]
    key = repr((template, block, oob, varying))
    html = pages.get(key)
    if html is None:
        html = _html(template, ctx, block, oob)
        if len(pages) < BLANK_PAGES_MAX:  # a bound, should a caller vouch for what varies
            pages[key] = html
    return Page(html, status, headers)


BLANK_PAGES_MAX = 64


def _html(template: str, ctx: dict[str, Any], block: str | None, oob: tuple[str, ...]) -> str:
    tmpl = env.get_template(template)
    html = "".join(tmpl.blocks[block](tmpl.new_context(ctx))) if block else tmpl.render(ctx)
    if oob:
        # htmx swaps these by id elsewhere in the page (e.g. the navbar after a sign-out).
        base = env.get_template("base.html")
        html += "".join("".join(base.blocks[name](base.new_context({**ctx, "oob": True}))) for name in oob)
    return html
