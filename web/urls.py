"""URLs by route name, memoised: every redirect and link names a route, never a literal path."""

from __future__ import annotations

from typing import Any

from starlette.requests import HTTPConnection
from starlette.routing import Mount, Router

_paths: dict[tuple[Any, ...], tuple[Router, str]] = {}
PATHS_MAX = 1024


def path_for(conn: HTTPConnection, name: str, /, **params: Any) -> str:
    """The path of a named route (a path, not a URL: behind a TLS proxy the scheme seen here is wrong)."""
    router: Router = conn.app.router
    # Memoised: Starlette finds a name by trying every route and raising at each miss, which
    # cost a third of a page's time. The entry keeps its router, so a recycled id() can't match.
    key = (id(router), name, *sorted(params.items()))
    known = _paths.get(key)
    if known is not None and known[0] is router:
        return known[1]
    if len(_paths) >= PATHS_MAX:  # bounded: revoke links carry a per-session handle
        _paths.clear()
    path = str(router.url_path_for(name, **params))
    _paths[key] = (router, path)
    return path


class Urls:
    """Every route without path parameters, as attributes: `{{ urls.login }}` in a template.

    An attribute lookup, where url_for('login') is a call through Jinja's call machinery: the
    home page has twenty links, and this made its rendering several times cheaper.
    """

    def __init__(self, router: Router) -> None:
        for route in router.routes:
            name = getattr(route, "name", None)
            if name and not getattr(route, "param_convertors", None):
                setattr(self, name, str(router.url_path_for(name)))
            elif name and isinstance(route, Mount):
                setattr(self, name, route.path)  # /static: files are {{ urls.static }}/app.css


_urls: dict[int, tuple[Router, Urls]] = {}


def urls_for(conn: HTTPConnection) -> Urls:
    router: Router = conn.app.router
    known = _urls.get(id(router))
    if known is None or known[0] is not router:
        known = (router, Urls(router))
        _urls[id(router)] = known
    return known[1]
