"""Second factors in a real browser: the authenticator app (enrolled with the secret the page
shows, then codes and recovery codes at sign-in) and passkeys (Chromium's virtual authenticator)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pyotp
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import (
    Account,
    App,
    NewContext,
    Shot,
    add_virtual_authenticator,
    create_account,
    localhost_url,
    mark_document,
    same_document,
    sign_in,
    sign_out,
)

pytestmark = pytest.mark.e2e

WRONG_CODE = "That code is not right. Enter the code your app shows now, or a recovery code."


def password_step(page: Page, account: Account, *, go: bool = True) -> None:
    """The first step of a sign-in with the authenticator app on: the password, then the code form."""
    if go:
        page.goto("/login")
    page.get_by_label("Email").fill(account.email)
    page.get_by_label("Password").fill(account.password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_label("Code", exact=True)).to_be_visible()
    expect(page.get_by_label("Password")).to_have_count(0)


def code_step(page: Page, code: str) -> None:
    page.get_by_label("Code", exact=True).fill(code)
    page.get_by_role("button", name="Sign in", exact=True).click()


def turn_on_totp(page: Page, shot: Shot | None = None) -> tuple[str, list[str]]:
    """Enrol the authenticator app from the security page; return its secret and the recovery codes."""
    page.goto("/account/security")
    factors = page.locator("#factors")
    expect(factors.locator(".badge", has_text="off")).to_be_visible()
    page.get_by_role("link", name="Turn on").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Turn on the authenticator app")
    expect(page.locator(".qr svg")).to_be_visible()
    secret = page.locator("code[data-totp-secret]").inner_text().strip()
    assert re.fullmatch(r"[A-Z2-7]{16,}", secret), secret
    page.get_by_label("Code from the app").fill(pyotp.TOTP(secret).now())
    if shot:
        shot(page, "enrol")
    page.get_by_role("button", name="Turn on").click()
    # The form goes when the answer is swapped in, and the codes come in that same answer.
    expect(page.locator("#totp-form")).to_have_count(0)
    expect(page.get_by_role("heading", level=1)).to_have_text("Your recovery codes", timeout=2_000)
    expect(page.get_by_role("status")).to_have_text(
        "The authenticator app is on: sign-ins now ask for a code from it."
    )
    codes = page.locator("ul[data-recovery-codes] li code")
    expect(codes).to_have_count(10)
    if shot:
        shot(page, "recovery-codes")
    return secret, [c.strip() for c in codes.all_inner_texts()]


def next_code(secret: str) -> str:
    """The code of the next time step: the enrolment used up the current one (a code works once)."""
    return pyotp.TOTP(secret).at(time.time() + 30)


def wrong_code(secret: str) -> str:
    """Six digits that are not the app's code now, nor a step either side of now."""
    totp, now = pyotp.TOTP(secret), time.time()
    valid = {totp.at(now + 30 * step) for step in range(-2, 4)}
    return next(code for code in ("000000", "111111", "222222") if code not in valid)


def account_facts(page: Page) -> dict[str, object]:
    response = page.request.get("/account", headers={"Accept": "application/json"})
    assert response.status == 200, response.text()
    facts: dict[str, object] = response.json()
    return facts


@pytest.mark.parametrize(
    "js",
    [
        pytest.param(True, id="js"),
        pytest.param(False, id="nojs"),
    ],
)
def test_authenticator_app_enrolment_shows_the_recovery_codes(
    new_context: NewContext, js: bool, app: App, shot: Shot
) -> None:
    account = create_account(app)
    page = new_context(js=js).new_page()
    sign_in(page, account)
    _, recovery = turn_on_totp(page, shot)
    assert len(set(recovery)) == 10
    assert account_facts(page)["two_factor"] == {"totp": True, "passkeys": 0, "recovery_codes_left": 10}
    page.get_by_role("link", name="I have saved them").click()
    expect(page.locator("#factors .badge", has_text="on")).to_be_visible()
    expect(page.locator("#factors")).to_contain_text("10 of 10 left")


def test_sign_in_with_a_code_from_the_app_then_once_with_a_recovery_code(
    new_context: NewContext, js: bool, app: App, shot: Shot
) -> None:
    account = create_account(app)
    # Enrolled without JavaScript, where the recovery codes show (see the test above).
    enrolling = new_context(js=False).new_page()
    sign_in(enrolling, account)
    secret, recovery = turn_on_totp(enrolling)

    # Password, then the code from the app: in place with htmx, a page of its own without.
    page = new_context(js=js).new_page()
    page.goto("/login")
    mark_document(page)
    password_step(page, account, go=False)
    assert same_document(page) is js
    expect(page.get_by_text("Your password is right.")).to_be_visible()
    shot(page, "code-step")
    code_step(page, wrong_code(secret))
    expect(page.locator("#login-error")).to_have_text(WRONG_CODE)
    code_step(page, next_code(secret))
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Hello, {account.name}")
    sign_out(page)

    # A recovery code instead of the app's code: once.
    password_step(page, account)
    code_step(page, recovery[3])
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Hello, {account.name}")
    assert account_facts(page)["two_factor"] == {"totp": True, "passkeys": 0, "recovery_codes_left": 9}
    sign_out(page)
    password_step(page, account)
    code_step(page, recovery[3])
    expect(page.locator("#login-error")).to_have_text(WRONG_CODE)
    expect(page.get_by_label("Code", exact=True)).to_be_visible()
    shot(page, "recovery-code-used-twice")
    # Another of them still works.
    code_step(page, recovery[4])
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Hello, {account.name}")


def test_keep_me_signed_in_holds_through_the_code_step(new_context: NewContext, js: bool, app: App) -> None:
    account = create_account(app)
    enrolling = new_context(js=False).new_page()
    sign_in(enrolling, account)
    secret, _ = turn_on_totp(enrolling)

    context = new_context(js=js)
    page = context.new_page()
    page.goto("/login")
    page.get_by_label("Keep me signed in on this device").check()
    password_step(page, account, go=False)
    code_step(page, next_code(secret))
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Hello, {account.name}")
    [cookie] = [c for c in context.cookies() if c["name"] == "sid"]
    assert cookie["expires"] > time.time() + 29 * 86400, cookie


# A browser without passkeys in its autofill (conditional mediation): the button is the only way.
NO_AUTOFILL = """
if (window.PublicKeyCredential) {
  PublicKeyCredential.isConditionalMediationAvailable = () => Promise.resolve(false);
}
"""
# Records what each navigator.credentials.get() call became (it only watches: the calls go
# through to Chromium as they were made).
WATCH_GETS = """
if (window.isSecureContext && navigator.credentials) {
  const get = navigator.credentials.get.bind(navigator.credentials);
  window.__e2eGets = [];
  navigator.credentials.get = (options) => {
    const call = {mediation: (options && options.mediation) || "optional", outcome: "pending"};
    window.__e2eGets.push(call);
    const done = (outcome) => {
      call.outcome = outcome;
      console.info("e2e: credentials.get " + call.mediation + " " + outcome);
    };
    return get(options).then(
      (credential) => { done("resolved"); return credential; },
      (error) => { done(error.name); throw error; });
  };
}
"""


def add_passkey(page: Page, name: str) -> None:
    page.goto("/account/security")
    expect(page.get_by_text("No passkey yet.")).to_be_visible()
    expect(page.locator("[data-passkey-needs-js]")).to_be_hidden()
    page.get_by_label("Name for a new passkey").fill(name)
    page.get_by_role("button", name="Add a passkey").click()
    row = page.locator("tr[data-passkey]")
    expect(row).to_have_count(1)
    expect(row.get_by_label("Name of this passkey")).to_have_value(name)
    expect(row.locator("td").nth(2)).to_have_text("never")
    expect(page.locator("[data-passkey-error]")).to_be_hidden()


def test_passkey_register_then_sign_in_with_the_button_alone(
    new_context: NewContext,
    app: App,
    shot: Shot,
    docs_screenshot: Callable[[Page, str], None],
) -> None:
    account = create_account(app)
    origin = localhost_url(app)
    context = new_context(base_url=origin)
    context.add_init_script(NO_AUTOFILL)
    page = context.new_page()
    add_virtual_authenticator(context, page)
    sign_in(page, account)
    add_passkey(page, "Test laptop")
    shot(page, "passkey-added")
    sign_out(page)

    # The passkey alone: no email, no password.
    page.goto("/login")
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Hello, {account.name}")
    expect(page).to_have_url(f"{origin}/")
    shot(page, "signed-in-with-passkey")

    page.goto("/account/security")
    row = page.locator("tr[data-passkey]")
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(2).locator("time")).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d$"))
    assert account_facts(page)["two_factor"] == {"totp": False, "passkeys": 1, "recovery_codes_left": 0}

    # For the docs: the page with a passkey and the authenticator app on (turned on without
    # JavaScript, where enrolment works; see above).
    other = new_context(js=False, base_url=origin).new_page()
    sign_in(other, account)
    turn_on_totp(other)
    page.reload()
    expect(row).to_have_count(1)
    expect(page.locator("#factors .badge", has_text="on")).to_be_visible()
    expect(page.get_by_role("button", name="Add a passkey")).to_be_visible()
    shot(page, "security")
    docs_screenshot(page, "screenshot-security.png")


def test_passkey_autofill_signs_in_and_the_button_works_while_autofill_waits(
    new_context: NewContext, app: App, shot: Shot
) -> None:
    account = create_account(app)
    origin = localhost_url(app)
    context = new_context(base_url=origin)
    context.add_init_script(WATCH_GETS)
    page = context.new_page()
    authenticator = add_virtual_authenticator(context, page)
    sign_in(page, account)
    add_passkey(page, "Phone")
    sign_out(page)

    # The autofill (conditional mediation): the virtual authenticator picks the passkey at once.
    page.goto("/login")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Hello, {account.name}")
    sign_out(page)

    # A user who ignores the autofill and presses the button while it waits. The passkey is
    # taken off the authenticator while the page starts its autofill request (which then has
    # nothing to offer and waits), and put back before the click.
    [passkey] = authenticator.credentials()
    authenticator.remove(passkey)
    page.goto("/login")
    page.wait_for_function("() => window.__e2eGets.some(c => c.mediation === 'conditional')", timeout=5_000)
    authenticator.add(passkey)
    outcomes: list[str] = []
    page.on("console", lambda m: outcomes.append(m.text) if m.text.startswith("e2e:") else None)
    button_call = "e2e: credentials.get optional"
    with page.expect_console_message(lambda m: m.text.startswith(button_call), timeout=10_000):
        page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Hello, {account.name}")
    # The button's request did it (the browser ends the waiting autofill request for it).
    assert outcomes[0] == "e2e: credentials.get optional resolved", outcomes
    assert "e2e: credentials.get conditional resolved" not in outcomes, outcomes
    expect(page).to_have_url(f"{origin}/")
    shot(page, "signed-in-with-the-button")

    # Removed from the account but still on the device: the autofill offers it, the user picks
    # it, and the refusal is shown (it used to be dropped with the autofill's own errors).
    page.goto("/account/security")
    page.get_by_role("button", name="Remove the passkey Phone").click()
    expect(page.get_by_text("No passkey yet.")).to_be_visible()
    page.goto("/")
    sign_out(page)
    page.goto("/login")
    expect(page.locator("[data-passkey-error]")).to_have_text("This passkey is not registered here.")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
