"""Accessibility of the account pages: axe-core finds nothing serious or critical on any of
them, in light and dark colour schemes, nor on the sudo dialog over a page, the sign-in's code
step, or the development inbox."""

from __future__ import annotations

import pyotp
import pytest
from playwright.sync_api import expect
from redis import Redis

from tests.e2e.conftest import (
    App,
    NewContext,
    Shot,
    age_session,
    axe_violations,
    create_account,
    localhost_url,
    open_mail,
    sign_in,
    sign_out,
)

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_account_pages_have_no_serious_accessibility_violations(
    new_context: NewContext, devmail_app: App, devmail_redis: Redis, scheme: str, shot: Shot
) -> None:
    account = create_account(devmail_app)
    context = new_context(color_scheme=scheme, base_url=localhost_url(devmail_app))
    page = context.new_page()
    found: dict[str, list[dict[str, object]]] = {}

    def check(name: str) -> None:
        found[name] = axe_violations(page)
        shot(page, name)

    page.goto("/password/forgot")
    check("forgot")
    page.get_by_label("Email").fill(account.email)
    page.get_by_role("button", name="Mail me a link").click()
    expect(page.get_by_role("status")).to_be_visible()
    check("forgot-sent")

    open_mail(page, account.email, "Reset your password")
    check("dev-mail-message")
    reset_link = page.locator("pre.mail-body a", has_text="/password/reset/").get_attribute("href")
    assert reset_link
    page.goto("/dev/mail")
    # This address's mails: the confirmation link from the sign-up, the reset link.
    expect(page.locator("tr[data-mail]", has_text=account.email)).to_have_count(2)
    check("dev-mail")
    page.goto(reset_link)
    expect(page.get_by_role("heading", level=1)).to_have_text("Choose a new password")
    check("reset")
    page.get_by_role("button", name="Change password").click()
    expect(page.locator("#new_password-error")).to_be_visible()
    check("reset-errors")

    sign_in(page, account)
    for path in ("/account", "/account/email", "/account/security", "/account/activity", "/account/delete"):
        page.goto(path)
        check(path.removeprefix("/").replace("/", "-"))
    page.goto("/account/2fa/totp")
    check("account-2fa-totp")
    secret = page.locator("code[data-totp-secret]").inner_text().strip()
    page.get_by_label("Code from the app").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Turn on").click()
    expect(page.locator("#totp-form")).to_have_count(0)
    page.goto("/account/security")
    expect(page.locator("#factors .badge", has_text="on")).to_be_visible()
    check("account-security-totp-on")
    page.get_by_role("button", name="Make new recovery codes").click()
    expect(page.locator("ul[data-recovery-codes] li")).to_have_count(10)
    check("recovery-codes")

    page.goto("/reauth?next=/account")
    check("reauth")
    page.goto("/account/password")
    age_session(devmail_redis, context)
    page.get_by_label("Current password").fill(account.password)
    page.get_by_label("New password", exact=True).fill("another long passphrase")
    page.get_by_role("button", name="Change password").click()
    expect(page.locator("#dialog dialog[data-reauth]")).to_be_visible()
    check("sudo-dialog")

    page.get_by_role("button", name="Cancel").click()
    sign_out(page)
    page.get_by_label("Email").fill(account.email)
    page.get_by_label("Password").fill(account.password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_label("Code", exact=True)).to_be_visible()
    check("login-code-step")

    assert {name: v for name, v in found.items() if v} == {}


def test_the_sudo_dialog_keeps_the_keyboard_inside(
    new_context: NewContext, app: App, redis: Redis, shot: Shot
) -> None:
    account = create_account(app)
    context = new_context()
    page = context.new_page()
    sign_in(page, account)
    page.goto("/account/password")
    age_session(redis, context)
    page.get_by_label("Current password").fill(account.password)
    page.get_by_label("New password", exact=True).fill("another long passphrase")
    page.get_by_role("button", name="Change password").click()
    dialog = page.locator("#dialog dialog[data-reauth]")
    expect(dialog.get_by_label("Password", exact=True)).to_be_focused()
    shot(page, "dialog")
    # A modal dialog makes the page behind it inert: Tab cycles through the dialog and, past its
    # last control, out to the browser's own UI (the page's <body> holds the focus then), never
    # into the form behind it.
    in_dialog = (
        "() => document.activeElement === document.body || !!document.activeElement.closest('#dialog dialog')"
    )
    for _ in range(5):  # round the dialog's password, Confirm, Cancel, the browser, and on
        page.keyboard.press("Tab")
        assert page.evaluate(in_dialog), page.evaluate("() => document.activeElement.outerHTML")
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
