"""Sign up, sign in, sign out in a real browser, with JavaScript on and (where starred) off."""

from __future__ import annotations

import os
import re
import shutil

import pytest
from playwright.sync_api import Page, Response, expect

from tests.e2e.conftest import (
    DOCS_SCREENSHOT,
    App,
    Navigations,
    NewContext,
    Shot,
    create_account,
    mark_document,
    new_account,
    same_document,
    sign_in,
)

pytestmark = pytest.mark.e2e


def fill_signup(page: Page, first: str, last: str, email: str, password: str) -> None:
    page.get_by_label("First name").fill(first)
    page.get_by_label("Last name").fill(last)
    page.get_by_label("Email", exact=True).fill(email)
    page.get_by_label("Password", exact=True).fill(password)


def test_sign_up_lands_on_home_greeted_by_name_and_survives_a_reload(
    new_context: NewContext, js: bool, app: App, shot: Shot
) -> None:
    page = new_context(js=js).new_page()
    account = new_account("Ada", "Lovelace")
    page.goto("/signup")
    fill_signup(page, account.first, account.last, account.email, account.password)
    shot(page, "signup-filled")
    page.get_by_role("button", name="Create account").click()

    expect(page).to_have_url(f"{app.url}/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Hello, Ada Lovelace")
    expect(page.locator("#countdown [data-countdown-time]")).to_have_text(re.compile(r"^\d\d:\d\d$"))
    shot(page, "home")
    if js:
        save_readme_screenshot(page)

    page.reload()
    expect(page.get_by_role("heading", level=1)).to_have_text("Hello, Ada Lovelace")
    expect(page.locator("#navbar")).to_contain_text("Ada Lovelace")
    expect(page.get_by_test_id("navbar-logout")).to_be_visible()
    shot(page, "home-after-reload")


def save_readme_screenshot(page: Page) -> None:
    """The README's picture: written when missing, or refreshed with E2E_UPDATE_SCREENSHOT=1."""
    # The countdown has ticked once the JavaScript runs, so the picture shows a live page.
    expect(page.locator("#countdown")).to_have_attribute("data-expires-in", re.compile(r"^\d+$"))
    if DOCS_SCREENSHOT.exists() and os.environ.get("E2E_UPDATE_SCREENSHOT") != "1":
        return
    DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    path = DOCS_SCREENSHOT.with_suffix(".tmp.png")
    page.screenshot(path=path, caret="initial")
    shutil.move(path, DOCS_SCREENSHOT)


def test_sign_up_with_bad_fields_shows_messages_next_to_them_and_keeps_the_values(
    new_context: NewContext, js: bool, app: App, shot: Shot
) -> None:
    page = new_context(js=js).new_page()
    page.goto("/signup")
    navigations = Navigations(page)
    fill_signup(page, "Ada", "", "ada-at-example", "short")
    page.get_by_role("button", name="Create account").click()

    email = page.get_by_label("Email", exact=True)
    expect(page.locator("#email-error")).to_have_text("Enter an email address like name@example.com.")
    expect(page.locator("#last_name-error")).to_have_text("Enter your last name.")
    expect(page.locator("#password-error")).to_have_text("Use at least 12 characters.")
    expect(page.locator("#first_name-error")).to_have_count(0)
    # The typed values come back; the password never does.
    expect(page.get_by_label("First name")).to_have_value("Ada")
    expect(email).to_have_value("ada-at-example")
    expect(page.get_by_label("Password", exact=True)).to_have_value("")
    # Each message sits right after its field and is that field's description.
    expect(email).to_have_attribute("aria-invalid", "true")
    expect(email).to_have_accessible_description("Enter an email address like name@example.com.")
    expect(page.locator(".field:has(#email) .field-error")).to_have_id("email-error")
    expect(page.get_by_role("alert")).to_have_text("Please correct the fields marked below.")
    shot(page, "errors")

    if js:
        assert navigations.urls == [], "the form was swapped in place, the page never navigated"
        expect(page.locator("#announce")).to_contain_text("Account not created: Enter your last name.")
    else:
        expect(page).to_have_url(f"{app.url}/signup")

    # Fixing the fields is all it takes.
    page.get_by_label("Last name").fill("Lovelace")
    email.fill(new_account().email)
    page.get_by_label("Password", exact=True).fill("correct horse battery staple")
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Hello, Ada Lovelace")


def test_wrong_password_says_so_inline_then_the_right_one_signs_in(
    new_context: NewContext, js: bool, app: App, shot: Shot
) -> None:
    account = create_account(app)
    page = new_context(js=js).new_page()
    page.goto("/login")
    navigations = Navigations(page)
    page.get_by_label("Email").fill(account.email)
    page.get_by_label("Password").fill("not the password at all")
    page.get_by_role("button", name="Sign in", exact=True).click()

    # Generic: it never says which of the two was wrong.
    expect(page.locator("#login-error")).to_have_text("Invalid email or password")
    expect(page.get_by_role("alert")).to_have_text("Invalid email or password")
    expect(page.get_by_label("Email")).to_have_value(account.email)
    expect(page.get_by_label("Password")).to_have_value("")
    shot(page, "wrong-password")
    if js:
        assert navigations.urls == []
        expect(page.locator("#announce")).to_have_text("Invalid email or password")

    page.get_by_label("Password").fill(account.password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page).to_have_url(f"{app.url}/")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Hello, {account.name}")
    shot(page, "home")


def document_responses(page: Page) -> list[Response]:
    """Every response to a page load (not htmx's XHRs) from now on."""
    responses: list[Response] = []
    page.on("response", lambda r: responses.append(r) if r.request.resource_type == "document" else None)
    return responses


@pytest.mark.parametrize("button", ["navbar-logout", "home-logout"])
def test_sign_out_swaps_in_the_login_form_and_back_does_not_show_the_private_page(
    page: Page, app: App, shot: Shot, button: str
) -> None:
    account = create_account(app)
    sign_in(page, account)
    home = page.goto("/")
    assert home is not None and home.headers["cache-control"] == "no-store"
    shot(page, "signed-in")

    mark_document(page)
    page.get_by_test_id(button).click()
    main = page.locator("main")
    expect(main.get_by_role("heading", level=1)).to_have_text("Sign in")
    expect(main.get_by_label("Email")).to_be_visible()
    expect(page).to_have_url(f"{app.url}/login")
    # The navbar changed too: no name, no countdown, no sign-out; the links of a visitor.
    navbar = page.locator("#navbar")
    expect(navbar.get_by_role("link", name="Create account")).to_be_visible()
    expect(navbar).not_to_contain_text(account.name)
    expect(page.locator("#countdown")).to_have_count(0)
    expect(page.get_by_test_id("navbar-logout")).to_have_count(0)
    assert same_document(page), "signing out reloaded the page"
    shot(page, "signed-out")

    loads = document_responses(page)
    with page.expect_navigation(url=f"{app.url}/login"):
        page.go_back()
    # Back asked the server again (nothing private was kept), which sent it to the login form.
    assert [(r.url, r.status) for r in loads] == [(f"{app.url}/", 303), (f"{app.url}/login", 200)]
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    expect(page.get_by_text(f"Hello, {account.name}")).to_have_count(0)
    shot(page, "after-back")


@pytest.mark.parametrize(
    "js",
    [
        pytest.param(True, id="js"),
        pytest.param(False, id="nojs"),
    ],
)
def test_back_after_signing_out_never_shows_a_private_page(
    new_context: NewContext, app: App, shot: Shot, js: bool
) -> None:
    account = create_account(app)
    # Whether Chrome keeps a page for Back is not certain every time: a few rounds, each in a fresh
    # browser context, make a private page that can come back all but sure to show up.
    for attempt in range(3):
        page = new_context(js=js).new_page()
        sign_in(page, account)
        # Leave the home page by a plain link first, so the browser may keep it for Back.
        page.locator("#navbar").get_by_role("link", name="Your sessions").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Your sessions")
        page.get_by_test_id("navbar-logout").click()
        expect(page).to_have_url(f"{app.url}/login")
        expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")

        for step in ("sessions", "home"):
            # "commit": a page restored from the back/forward cache fires no load event.
            page.go_back(wait_until="commit")
            expect(page).to_have_url(f"{app.url}/login", timeout=3_000)
            expect(page.get_by_role("heading", level=1)).to_have_text("Sign in", timeout=3_000)
            expect(page.get_by_text(account.name)).to_have_count(0)
            if attempt == 0:
                shot(page, f"back-to-{step}")
        page.context.close()
