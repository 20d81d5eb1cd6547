"""The session countdown: it ticks, warns, extends, expires, and catches up with other tabs."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import (
    App,
    NewContext,
    Shot,
    axe_violations,
    countdown_seconds,
    create_account,
    sign_in,
    wait_for_countdown,
)

pytestmark = pytest.mark.e2e

IDLE = 8  # seconds; the warning shows from min(60, IDLE // 2) = 4 seconds left


def test_countdown_ticks_warns_extends_and_expires(
    serve: Callable[..., App], new_context: NewContext, shot: Shot
) -> None:
    app = serve(SESSION_IDLE_TIMEOUT=str(IDLE))
    account = create_account(app)
    page = new_context(base_url=app.url).new_page()
    sign_in(page, account)
    widget = page.locator("#countdown")
    stay = widget.get_by_role("button", name="Stay signed in")
    expired = widget.locator("[data-countdown-expired]")
    expect(widget).to_have_attribute("data-warn-at", str(IDLE // 2))

    # It ticks down in the navbar and in the big clock alike.
    start = countdown_seconds(page)
    assert 0 < start <= IDLE
    wait_for_countdown(page, f"s < {start}")
    wait_for_countdown(page, f"s < {start}", selector=".big-clock")
    shot(page, "ticking")

    # Near the end: the warning, and the button that keeps the session.
    wait_for_countdown(page, f"s <= {IDLE // 2}")
    expect(widget).to_have_class(re.compile(r"\bwarning\b"))
    expect(stay).to_be_visible()
    expect(page.locator("#announce")).to_contain_text("Choose Stay signed in to keep it.")
    shot(page, "warning")

    stay.click()
    wait_for_countdown(page, f"s >= {IDLE - 2}")
    expect(widget).not_to_have_class(re.compile(r"\bwarning\b"))
    shot(page, "extended")

    # At zero the widget says so, and the server agrees: the next click lands on /login.
    expect(expired).to_be_visible(timeout=IDLE * 1000 + 10_000)
    expect(expired).to_contain_text("Your session has expired")
    expect(page.locator("#countdown [data-countdown-time]")).to_have_count(0)  # the server's widget now
    expect(page.locator(".session-card [data-countdown-expired]")).to_be_visible()
    expect(page.locator(".big-clock")).to_be_hidden()
    expect(page.locator("#announce")).to_have_text("Your session has expired. Sign in again to continue.")
    shot(page, "expired")
    assert axe_violations(page) == []

    page.locator("#navbar").get_by_role("link", name="Your sessions").click()
    expect(page).to_have_url(f"{app.url}/login")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    shot(page, "next-click")


def test_stay_signed_in_is_hidden_until_the_warning(page: Page, app: App) -> None:
    sign_in(page, create_account(app))
    widget = page.locator("#countdown")
    expect(widget).to_have_attribute("data-warn-at", "60")
    wait_for_countdown(page, "s > 60")
    expect(widget).not_to_have_class(re.compile(r"\bwarning\b"))
    expect(widget.locator("[data-countdown-stay]")).to_be_hidden(timeout=2_000)


def test_at_zero_no_button_on_the_page_is_a_dead_end(
    serve: Callable[..., App], new_context: NewContext, shot: Shot
) -> None:
    app = serve(SESSION_IDLE_TIMEOUT="3")
    account = create_account(app)
    page = new_context(base_url=app.url).new_page()
    sign_in(page, account)
    expect(page.locator("#countdown [data-countdown-expired]")).to_be_visible()
    card = page.locator(".session-card")
    shot(page, "expired")
    # "Stay signed in" could only fail now, so it is gone; what is left leads to signing in again.
    expect(card.get_by_role("button", name="Stay signed in")).to_be_hidden()
    card.get_by_role("link", name="Manage your sessions").click()
    expect(page).to_have_url(f"{app.url}/login")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")


def test_a_tab_catches_up_with_a_session_extended_in_another(
    new_context: NewContext, app: App, shot: Shot
) -> None:
    account = create_account(app)
    context = new_context()
    first = context.new_page()
    sign_in(first, account)
    second = context.new_page()
    second.goto("/")
    expect(second.get_by_role("heading", level=1)).to_have_text(f"Hello, {account.name}")

    # Let the second tab's clock run down a little, then extend the session from the first tab.
    wait_for_countdown(second, "s <= 1796")
    first.bring_to_front()
    first.locator(".session-card").get_by_role("button", name="Stay signed in").click()
    wait_for_countdown(first, "s >= 1798")
    assert countdown_seconds(second) <= 1796, "the second tab is not meant to know yet"
    shot(first, "extended-tab")

    # Shown again, the second tab asks the server and shows its figure.
    second.bring_to_front()
    assert second.evaluate("() => document.visibilityState") == "visible"
    second.evaluate("() => document.dispatchEvent(new Event('visibilitychange'))")
    wait_for_countdown(second, "s >= 1797")
    shot(second, "caught-up-tab")
