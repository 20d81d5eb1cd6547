"""One user in several browsers: /sessions lists them all, and ending one signs that browser out."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import App, NewContext, Shot, create_account, sign_in

pytestmark = pytest.mark.e2e


def expect_signed_out(page: Page, app: App) -> None:
    """The browser's next request (a click in the navbar) lands on the login form."""
    page.locator("#navbar").get_by_role("link", name="Your sessions").click()
    expect(page).to_have_url(f"{app.url}/login")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")


def test_the_list_shows_both_browsers_and_revoking_the_other_signs_it_out(
    new_context: NewContext, js: bool, app: App, shot: Shot
) -> None:
    account = create_account(app)
    mine = new_context(js=js).new_page()
    other = new_context().new_page()
    sign_in(other, account)
    sign_in(mine, account)

    mine.goto("/sessions")
    rows = mine.locator("tr[data-session]")
    expect(rows).to_have_count(2)
    current = mine.locator("tr[data-session][aria-current=true]")
    expect(current).to_contain_text("this device")
    expect(current.get_by_role("button")).to_have_count(0)
    theirs = mine.locator("tr[data-session]:not([aria-current])")
    expect(theirs).to_have_count(1)
    expect(theirs).to_contain_text("127.0.0.1")
    shot(mine, "two-sessions")

    theirs.get_by_role("button", name="Sign out").click()
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("this device")
    expect(mine.get_by_text("This is your only session.")).to_be_visible()
    expect(mine.get_by_role("button", name="Sign out all other sessions")).to_have_count(0)
    shot(mine, "revoked")

    expect_signed_out(other, app)
    shot(other, "other-signed-out")
    # Only the other one: this browser is still signed in.
    mine.reload()
    expect(mine.get_by_role("heading", level=1)).to_have_text("Your sessions")


def test_sign_out_all_other_sessions(new_context: NewContext, app: App, shot: Shot) -> None:
    account = create_account(app)
    others = [new_context().new_page() for _ in range(2)]
    for page in others:
        sign_in(page, account)
    mine = new_context().new_page()
    sign_in(mine, account)

    mine.goto("/sessions")
    expect(mine.locator("tr[data-session]")).to_have_count(3)
    mine.get_by_role("button", name="Sign out all other sessions").click()
    expect(mine.locator("tr[data-session]")).to_have_count(1)
    expect(mine.get_by_text("This is your only session.")).to_be_visible()
    shot(mine, "only-this-one")
    for page in others:
        expect_signed_out(page, app)
