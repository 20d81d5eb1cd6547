"""The account's life in a real browser: a forgotten password (through the development inbox),
sudo mode's dialog and its page, "keep me signed in" across a browser restart, the security
activity, and deleting the account. JavaScript on and off wherever the flow allows."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect
from redis import Redis

from tests.conftest import PASSWORD
from tests.e2e.conftest import (
    Account,
    App,
    NewContext,
    Shot,
    age_session,
    create_account,
    localhost_url,
    mark_document,
    open_mail,
    same_document,
    session_redis_key,
    sign_in,
    sign_out,
)

pytestmark = pytest.mark.e2e

NEW_PASSWORD = "a brand new passphrase 2"


def submit_login(page: Page, email: str, password: str) -> None:
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()


# -- a forgotten password, through the development inbox --------------------------------


def test_forgotten_password_reset_through_the_dev_inbox(
    new_context: NewContext, js: bool, devmail_app: App, shot: Shot
) -> None:
    account = create_account(devmail_app)
    origin = localhost_url(devmail_app)
    page = new_context(js=js, base_url=origin).new_page()

    page.goto("/password/forgot")
    page.get_by_label("Email").fill(account.email)
    page.get_by_role("button", name="Mail me a link").click()
    expect(page.get_by_role("status")).to_have_text(
        "If an account exists for that address, a link to reset its password is on its way."
    )
    expect(page).to_have_url(f"{origin}/password/forgot")
    shot(page, "link-asked-for")

    open_mail(page, account.email, "Reset your password")
    link = page.locator("pre.mail-body a", has_text="/password/reset/")
    expect(link).to_have_count(1)
    reset_url = re.compile("^" + re.escape(f"{origin}/password/reset/") + r"[\w-]+$")
    expect(link).to_have_attribute("href", reset_url)
    shot(page, "mail")
    link.click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Choose a new password")
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    shot(page, "new-password")
    page.get_by_role("button", name="Change password").click()
    expect(page).to_have_url(f"{origin}/login")
    expect(page.get_by_role("status")).to_have_text(
        "Your password was changed and every session was signed out. Sign in with the new one."
    )
    shot(page, "changed")

    # The address was never confirmed: the reset proved it, and replaced the name its maker typed
    # (it could have been anyone) with the address's local part.
    sign_in(page, Account(account.email.partition("@")[0], "", account.email, NEW_PASSWORD))
    sign_out(page)
    submit_login(page, account.email, PASSWORD)
    expect(page.locator("#login-error")).to_have_text("Invalid email or password")
    shot(page, "old-password-refused")


# -- sudo mode: the dialog that replays the request, and the page without JavaScript -----

PASSWORD_CHANGED = "Your password was changed, and every other session was signed out."


def fill_password_change(page: Page, current: str, new: str) -> None:
    page.get_by_label("Current password").fill(current)
    page.get_by_label("New password", exact=True).fill(new)


def test_sudo_dialog_then_the_change_completes_in_place(
    new_context: NewContext,
    app: App,
    redis: Redis,
    shot: Shot,
    docs_screenshot: Callable[[Page, str], None],
) -> None:
    account = create_account(app)
    context = new_context()
    page = context.new_page()
    sign_in(page, account)
    page.goto("/account/password")
    age_session(redis, context)
    mark_document(page)

    fill_password_change(page, account.password, NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    dialog = page.locator("#dialog dialog[data-reauth]")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("heading", level=1)).to_have_text("Confirm it is you")
    password = dialog.get_by_label("Password", exact=True)
    expect(password).to_be_visible()
    # What was typed is still in the form underneath, for the replay.
    expect(page.get_by_label("New password", exact=True)).to_have_value(NEW_PASSWORD)
    shot(page, "dialog")
    docs_screenshot(page, "screenshot-sudo.png")

    password.fill("not my password at all")
    dialog.get_by_role("button", name="Confirm").click()
    expect(dialog.get_by_role("alert")).to_have_text("That is not right. Try again.")
    dialog.get_by_label("Password", exact=True).fill(account.password)
    dialog.get_by_role("button", name="Confirm").click()

    expect(page.locator("#password-form").get_by_role("status")).to_have_text(PASSWORD_CHANGED)
    expect(dialog).to_have_count(0)
    expect(page).to_have_url(f"{app.url}/account/password")
    assert same_document(page), "the change reloaded the page"
    shot(page, "changed-in-place")

    # It was the request as typed: the new password is the one now.
    sign_out(page)
    sign_in(page, Account(account.first, account.last, account.email, NEW_PASSWORD))


def test_sudo_without_javascript_goes_to_reauth_and_back(
    new_context: NewContext, app: App, redis: Redis, shot: Shot
) -> None:
    account = create_account(app)
    context = new_context(js=False)
    page = context.new_page()
    sign_in(page, account)
    page.goto("/account/password")
    age_session(redis, context)

    fill_password_change(page, account.password, NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    expect(page).to_have_url(f"{app.url}/reauth?next=%2Faccount%2Fpassword")
    expect(page.get_by_role("heading", level=1)).to_have_text("Confirm it is you")
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    shot(page, "reauth-page")
    page.get_by_label("Password", exact=True).fill(account.password)
    page.get_by_role("button", name="Confirm").click()

    # Back on the form (a POST body is not replayed without JavaScript): once more, and it is done.
    expect(page).to_have_url(f"{app.url}/account/password")
    expect(page.get_by_role("heading", level=1)).to_have_text("Change password")
    fill_password_change(page, account.password, NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("status")).to_have_text(PASSWORD_CHANGED)
    expect(page).to_have_url(f"{app.url}/account/password")
    shot(page, "changed")


# -- keep me signed in ---------------------------------------------------------------------

MONTH = 30 * 86400


def restart(new_context: NewContext, context: BrowserContext, js: bool) -> Page:
    """The browser closed and opened again: cookies without an expiry (session cookies) are gone."""
    state = context.storage_state()
    kept = [c for c in state["cookies"] if c["expires"] > 0]
    return new_context(js=js, storage_state={"cookies": kept, "origins": []}).new_page()


def session_cookie(context: BrowserContext) -> dict[str, object]:
    [cookie] = [c for c in context.cookies() if c["name"] == "sid"]
    return dict(cookie)


def test_keep_me_signed_in_survives_a_browser_restart_and_without_it_not(
    new_context: NewContext, js: bool, app: App, redis: Redis, shot: Shot
) -> None:
    account = create_account(app)

    kept = new_context(js=js)
    page = kept.new_page()
    sign_in(page, account, remember=True)
    lasts = float(session_cookie(kept)["expires"]) - time.time()  # type: ignore[arg-type]
    assert MONTH - 120 < lasts <= MONTH, lasts
    assert redis.hget(session_redis_key(kept), "r") is not None
    after = restart(new_context, kept, js)
    after.goto("/")
    expect(after.get_by_role("heading", level=1)).to_have_text(f"Hello, {account.name}")
    shot(after, "remembered-after-restart")

    forgotten = new_context(js=js)
    page = forgotten.new_page()
    sign_in(page, account)
    assert session_cookie(forgotten)["expires"] == -1
    after = restart(new_context, forgotten, js)
    after.goto("/")
    expect(after).to_have_url(f"{app.url}/login")
    expect(after.get_by_role("heading", level=1)).to_have_text("Sign in")
    shot(after, "signed-out-after-restart")


# -- security activity ---------------------------------------------------------------------


def activity(page: Page) -> list[str]:
    """Every event type on the account's activity, newest first, read through the JSON pages."""
    types: list[str] = []
    before = ""
    while True:
        response = page.request.get(f"/account/activity{before}", headers={"Accept": "application/json"})
        assert response.status == 200, response.text()
        body = response.json()
        types += [e["type"] for e in body["events"]]
        if not body["next"]:
            return types
        before = f"?before={body['next']}"


def wait_for_activity(page: Page, count: int, within: float = 10.0) -> list[str]:
    """The account's events once `count` of them are written (a background task writes them)."""
    deadline = time.monotonic() + within
    while len(found := activity(page)) < count:
        assert time.monotonic() < deadline, f"{len(found)} events of {count}: {found}"
    return found


def test_activity_lists_sign_ins_and_failures_and_shows_more(
    new_context: NewContext, js: bool, app: App, shot: Shot
) -> None:
    account = create_account(app)
    other = new_context().new_page()
    submit_login(other, account.email, "not the password at all")
    expect(other.locator("#login-error")).to_have_text("Invalid email or password")
    page = new_context(js=js).new_page()
    sign_in(page, account)

    newest_first = ["new_browser", "sign_in", "sign_in_failed", "session_ended", "sign_up"]
    assert wait_for_activity(page, len(newest_first)) == newest_first
    page.goto("/account/activity")
    items = page.locator("li[data-event]")
    expect(items).to_have_count(5)
    expect(items.nth(1)).to_contain_text("Signed in with password")
    expect(items.nth(2)).to_contain_text("Failed sign-in (wrong password)")
    expect(items.nth(2)).to_contain_text("127.0.0.1")
    expect(page.get_by_role("link", name="Show more")).to_have_count(0)
    shot(page, "activity")

    # More than a page of it: sign-ins and sign-outs from elsewhere.
    with httpx.Client(base_url=app.url) as client:
        for _ in range(12):
            response = client.post("/login", data={"email": account.email, "password": account.password})
            assert response.status_code == 303, response.text
            assert client.post("/logout").status_code == 303
    everything = wait_for_activity(page, 5 + 1 + 12 * 2)
    assert len(everything) == 30, everything

    page.goto("/account/activity")
    expect(items).to_have_count(20)
    assert [i.get_attribute("data-event") for i in items.all()] == everything[:20]
    more = page.get_by_role("link", name="Show more")
    expect(more).to_be_visible()
    mark_document(page)
    more.click()
    if js:
        expect(items).to_have_count(30)
        expect(page).to_have_url(f"{app.url}/account/activity")
        assert same_document(page), "Show more reloaded the page"
        assert [i.get_attribute("data-event") for i in items.all()] == everything
    else:
        next_page = re.compile(re.escape(f"{app.url}/account/activity?before=") + r"[0-9a-f]{24}$")
        expect(page).to_have_url(next_page)
        expect(items).to_have_count(10)
        assert [i.get_attribute("data-event") for i in items.all()] == everything[20:]
    expect(more).to_have_count(0)
    shot(page, "all-of-it")


# -- deleting the account ------------------------------------------------------------------

DELETED = "Your account was deleted, with everything it held. You can sign up again at any time."


def test_delete_the_account_then_sign_up_again_with_its_address(
    new_context: NewContext, js: bool, app: App, redis: Redis, shot: Shot
) -> None:
    account = create_account(app)
    context = new_context(js=js)
    page = context.new_page()
    sign_in(page, account)
    session = session_redis_key(context)
    assert redis.exists(session)

    page.goto("/account")
    page.get_by_role("link", name="Delete your account").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Delete your account")
    confirm = page.get_by_label(f"Type {account.email} to confirm")
    confirm.fill("someone.else@example.com")
    page.get_by_role("button", name="Delete my account").click()
    expect(page.locator("#confirm-error")).to_have_text("Type the email address of this account to confirm.")
    expect(confirm).to_have_attribute("aria-invalid", "true")
    shot(page, "wrong-confirmation")

    confirm.fill(account.email)
    page.get_by_role("button", name="Delete my account").click()
    expect(page).to_have_url(f"{app.url}/signup")
    expect(page.get_by_role("status")).to_have_text(DELETED)
    expect(page.locator("#navbar").get_by_role("link", name="Create account")).to_be_visible()
    assert not redis.exists(session)
    shot(page, "deleted")

    # The old session is gone; the address is free again.
    page.goto("/account")
    expect(page).to_have_url(f"{app.url}/login")
    page.goto("/signup")
    page.get_by_label("First name").fill("Ada")
    page.get_by_label("Last name").fill("Byron")
    page.get_by_label("Email", exact=True).fill(account.email)
    page.get_by_label("Password", exact=True).fill(account.password)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Hello, Ada Byron")
