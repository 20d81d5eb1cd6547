"""URLs by route name, memoised: every redirect and link names a route, never a literal path."""

from __future__ import annotations

from typing import Any

from starlette.requests import HTTPConnection
from starlette.routing import BaseRoute, Mount, Route, Router

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


def route_paths(routes: list[BaseRoute]) -> dict[str, str]:
    """The path of every named route without parameters (and of mounts: /static)."""
    paths = {}
    for route in routes:
        name = getattr(route, "name", None)
        if (isinstance(route, Route) and name and not route.param_convertors) or (
            isinstance(route, Mount) and name
        ):
            paths[name] = route.path
    return paths
