"""Accessibility: axe-core finds nothing serious, fields are labelled, errors are tied to their
fields and announced, and a keyboard alone is enough to sign in and out."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import App, NewContext, Shot, axe_violations, create_account, new_account, sign_in

pytestmark = pytest.mark.e2e


def submit_signup_with_errors(page: Page) -> None:
    page.goto("/signup")
    page.get_by_label("Email", exact=True).fill("not-an-email")
    page.get_by_role("button", name="Create account").click()
    expect(page.locator("#email-error")).to_be_visible()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_pages_have_no_serious_accessibility_violations(
    new_context: NewContext, app: App, scheme: str, shot: Shot
) -> None:
    account = create_account(app)
    page = new_context(color_scheme=scheme).new_page()
    found: dict[str, list[dict[str, object]]] = {}

    def check(name: str) -> None:
        found[name] = axe_violations(page)
        shot(page, name)

    page.goto("/login")
    check("login")
    page.goto("/signup")
    check("signup")
    submit_signup_with_errors(page)
    check("signup-errors")

    other = new_context(color_scheme=scheme).new_page()
    sign_in(other, account)  # a second session, so the list shows a "Sign out" button too
    sign_in(page, account)
    check("home")
    page.goto("/sessions")
    expect(page.locator("tr[data-session]")).to_have_count(2)
    check("sessions")
    page.goto("/account/password")
    check("password")

    assert {name: v for name, v in found.items() if v} == {}


FORMS = ["/login", "/signup", "/account/password", "/account/profile"]


def test_every_field_has_a_label(new_context: NewContext, app: App) -> None:
    visitor = new_context().new_page()
    member = new_context().new_page()
    sign_in(member, create_account(app))
    forms = {"/login": visitor, "/signup": visitor, "/account/password": member, "/account/profile": member}
    for path, page in forms.items():
        page.goto(path)
        fields = page.locator("main").locator("input:not([type=hidden]), select, textarea")
        assert fields.count() >= 2, path
        for field in fields.all():
            label = field.evaluate("el => Array.from(el.labels, l => l.textContent.trim()).join(' ')")
            assert label, f"{path}: the field {field.get_attribute('name')} has no <label>"
            expect(field).to_have_accessible_name(label)


@pytest.mark.parametrize("form", ["login", "signup"])
def test_errors_are_tied_to_their_fields_and_announced(
    new_context: NewContext, js: bool, app: App, form: str, shot: Shot
) -> None:
    page = new_context(js=js).new_page()
    page.goto(f"/{form}")
    page.get_by_role("button", name="Sign in" if form == "login" else "Create account", exact=True).click()
    invalid = page.locator("main [aria-invalid=true]")
    expect(invalid.first).to_be_visible()
    shot(page, "errors")

    messages = []
    for field in invalid.all():
        name = field.get_attribute("name")
        described_by = (field.get_attribute("aria-describedby") or "").split()
        assert f"{name}-error" in described_by, f"{name}: aria-describedby={described_by}"
        error = page.locator(f"#{name}-error")
        expect(error).to_be_visible()
        text = error.inner_text().strip()
        assert text
        # The message comes first in the description (a hint may follow it).
        expect(field).to_have_accessible_description(re.compile("^" + re.escape(text)))
        messages.append(text)
    assert len(messages) >= 2

    if js:
        # htmx swapped the form in place and filled the live region out of band.
        announce = page.locator("#announce")
        expect(announce).to_have_attribute("aria-live", "polite")
        for text in messages:
            expect(announce).to_contain_text(text)


@pytest.mark.parametrize("form", ["login", "signup"])
def test_after_a_failed_submit_focus_is_on_the_first_field_to_fix(page: Page, app: App, form: str) -> None:
    page.goto(f"/{form}")
    if form == "signup":
        page.get_by_label("First name").fill("Ada")
    page.get_by_role("button", name="Sign in" if form == "login" else "Create account", exact=True).click()
    first_invalid = page.locator("main [aria-invalid=true]").first
    expect(first_invalid).to_be_visible()
    expect(first_invalid).to_be_focused(timeout=2_000)


def tab_to(page: Page, selector: str, limit: int = 30) -> None:
    """Press Tab until the element matching `selector` has the focus (at most `limit` times)."""
    target = page.locator(selector)
    for _ in range(limit):
        if target.evaluate("el => el === document.activeElement"):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"{selector} never got the focus in {limit} presses of Tab")


def test_sign_in_and_out_with_the_keyboard_alone(
    new_context: NewContext, js: bool, app: App, shot: Shot
) -> None:
    account = create_account(app)
    page = new_context(js=js).new_page()
    page.goto("/login")

    # The first Tab reaches the skip link; Enter on it skips the navbar.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    expect(page.get_by_role("link", name="Skip to content")).to_be_in_viewport()
    shot(page, "skip-link")
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Email")).to_be_focused()
    page.keyboard.type(account.email)
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type("a wrong password")
    page.keyboard.press("Enter")
    expect(page.locator("#login-error")).to_have_text("Invalid email or password")
    shot(page, "wrong-password")

    # Back to the password field (JavaScript keeps the focus there; without it, Tab gets there).
    tab_to(page, "#password")
    page.keyboard.type(account.password)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Hello, {account.name}")
    shot(page, "signed-in")

    tab_to(page, "[data-testid=navbar-logout]")
    shot(page, "sign-out-focused")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    expect(page.get_by_test_id("navbar-logout")).to_have_count(0)


def test_sign_up_with_the_keyboard_alone(page: Page, app: App) -> None:
    account = new_account("Grace", "Hopper")
    page.goto("/signup")
    tab_to(page, "#first_name")
    for value in (account.first, account.last, account.email, account.password):
        page.keyboard.type(value)
        page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Create account")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Hello, Grace Hopper")
