"""Full pages for browsers, named blocks for htmx; redirects that htmx can follow."""

from __future__ import annotations

import httpx

from tests.conftest import HX, signup


async def test_forms_are_fragments_for_htmx_and_pages_otherwise(client: httpx.AsyncClient) -> None:
    for path, form_id in (("/login", "login-form"), ("/signup", "signup-form")):
        page = await client.get(path)
        fragment = await client.get(path, headers=HX)
        assert page.text.lstrip().lower().startswith("<!doctype html>")
        assert f'id="{form_id}"' in page.text
        assert fragment.text.lstrip().startswith("<form")
        assert f'id="{form_id}"' in fragment.text
        for r in (page, fragment):
            assert "HX-Request" in r.headers["vary"]
            assert r.headers["cache-control"] == "no-store"


async def test_boosted_and_history_restore_requests_get_full_pages(client: httpx.AsyncClient) -> None:
    for extra in ({"HX-Boosted": "true"}, {"HX-History-Restore-Request": "true"}):
        r = await client.get("/login", headers={**HX, **extra})
        assert "<html" in r.text


async def test_anonymous_home_redirects(client: httpx.AsyncClient) -> None:
    plain = await client.get("/")
    assert plain.status_code == 303 and plain.headers["location"] == "/login"
    assert not any(h.startswith("hx-") for h in plain.headers)
    hx = await client.get("/", headers=HX)
    assert hx.status_code == 200 and hx.headers["hx-redirect"] == "/login"


async def test_home_page_has_logout_button_and_countdown(client: httpx.AsyncClient) -> None:
    await signup(client)
    r = await client.get("/")
    assert 'hx-post="/logout"' in r.text
    assert 'id="countdown"' in r.text and "data-expires-in=" in r.text
    assert 'href="/sessions"' in r.text  # navbar link to the sessions page


async def test_no_template_has_inline_script_or_handlers(client: httpx.AsyncClient) -> None:
    await signup(client)
    for path in ("/", "/sessions", "/account/password", "/logout"):
        html = (await client.get(path)).text
        assert "<script>" not in html and " onclick=" not in html and " onload=" not in html
        assert '<script src="/static/htmx.min.js" defer></script>' in html


async def test_htmx_errors_are_retargeted_alerts(client: httpx.AsyncClient) -> None:
    r = await client.get("/nowhere", headers=HX)
    assert r.status_code == 404
    assert r.headers["hx-retarget"] == "#alerts"
    assert r.text.lstrip().startswith('<div class="alert')
    page = await client.get("/nowhere")
    assert page.status_code == 404 and "<html" in page.text and "hx-retarget" not in page.headers
