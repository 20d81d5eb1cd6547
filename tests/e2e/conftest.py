"""The real app in a real Chromium: `python -m web` on a free port, driven through Playwright.

Each test gets fresh browser contexts (so fresh cookies) on a shared app server, or a server of
its own when it needs other settings (`serve(SESSION_IDLE_TIMEOUT="6")`). Nothing here sleeps to
synchronise: the tests wait on conditions with Playwright's auto-waiting `expect`.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    CDPSession,
    ConsoleMessage,
    Frame,
    Locator,
    Page,
    expect,
    sync_playwright,
)
from redis import Redis

from tests.conftest import PASSWORD
from tests.helpers.servers import AppProcess as App
from tests.helpers.servers import start_app
from web.embedded import Server
from web.sessions.ids import digest
from web.sessions.store import session_key

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ARTIFACTS = HERE / "artifacts"
AXE = HERE / "node_modules" / "axe-core" / "axe.min.js"
DOCS = ROOT / "docs"
DOCS_SCREENSHOT = DOCS / "screenshot-home.png"
SECRET_KEY = "e2e-secret-key-0123456789abcdef0123456789abcdef"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1100, "height": 700}
SERIOUS = ("serious", "critical")

# The fixtures' shapes, for the tests' type hints.
Shot = Callable[[Page, str], Path]
NewContext = Callable[..., BrowserContext]

# The countdown needs a few seconds of real time; every other wait is far shorter.
expect.set_options(timeout=10_000)


def chromium_path() -> str | None:
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return shutil.which("chromium")


def missing_tools() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if chromium_path() is None:
        return "Chromium is not installed (apt-get install chromium)"
    if not AXE.exists():
        return f"axe-core is not installed ({AXE.relative_to(ROOT)}; cd tests/e2e && npm ci)"
    return None


@pytest.fixture(scope="package", autouse=True)
def _tools() -> None:
    """Skip the browser tests where the tools are missing; in CI (E2E_REQUIRED=1), fail instead."""
    reason = missing_tools()
    if reason is None:
        return
    if os.environ.get("E2E_REQUIRED") == "1":
        pytest.fail(f"E2E_REQUIRED=1 but {reason}", pytrace=False)
    pytest.skip(f"browser tests skipped: {reason}")


# -- the app --------------------------------------------------------------------------------


def e2e_app(services: tuple[Server, Server, Server], log_dir: Path, **env: str) -> App:
    """`python -m web` on the suite's Redis, MongoDB (a database of its own) and SMTP server."""
    redis_server, mongo_server, mail_catcher = services
    database = f"e2e_{uuid.uuid4().hex[:12]}"
    settings = {
        "REDIS_URL": redis_server.url,
        "MONGODB_URL": re.sub(r"/app$", f"/{database}", mongo_server.url),
        "SMTP_URL": mail_catcher.url,
        "SECRET_KEY": SECRET_KEY,
        "COOKIE_SECURE": "0",
        "BCRYPT_ROUNDS": "4",
    }
    return start_app(log_dir, **{**settings, **env})


@pytest.fixture(scope="package")
def services(
    redis_server: Server, mongo_server: Server, mail_catcher: Server
) -> tuple[Server, Server, Server]:
    return redis_server, mongo_server, mail_catcher


@pytest.fixture(scope="package")
def app_server(
    services: tuple[Server, Server, Server], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[App]:
    """The app most tests share, with the default settings."""
    with e2e_app(services, tmp_path_factory.mktemp("e2e-app")) as app:
        yield app


@pytest.fixture
def app(app_server: App, redis: Redis) -> App:
    """The shared app, with Redis emptied (sessions, throttle counters) before the test."""
    return app_server


@pytest.fixture
def serve(
    services: tuple[Server, Server, Server], redis: Redis, tmp_path: Path
) -> Iterator[Callable[..., App]]:
    """Start an app of the test's own with other settings, e.g. serve(SESSION_IDLE_TIMEOUT="6")."""
    started: list[App] = []

    def start(**env: str) -> App:
        started.append(e2e_app(services, tmp_path, **env))
        return started[-1]

    yield start
    for app in started:
        app.stop()


@pytest.fixture(scope="package")
def devmail_server(
    services: tuple[Server, Server, Server], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[App]:
    """An app with its own mail catcher (SMTP_URL empty), so /dev/mail exists.

    Its Redis is database 1: the outgoing mail queue is one stream ("mail:q", group "senders")
    per database, and every e2e app has the same SECRET_KEY, so on database 0 the shared app's
    sender could take this app's mail and hand it to the suite's catcher instead.
    """
    redis_server = services[0]
    folder = tmp_path_factory.mktemp("e2e-devmail")
    redis_url = re.sub(r"/0$", "/1", redis_server.url)
    assert redis_url != redis_server.url, redis_server.url
    with e2e_app(services, folder, SMTP_URL="", DATA_DIR=str(folder / "data"), REDIS_URL=redis_url) as app:
        assert "Mail      embedded   caught in" in app.log(), app.log()
        yield app


@pytest.fixture
def devmail_app(devmail_server: App, redis: Redis) -> App:
    """The app with a development inbox, Redis emptied (every database) before the test."""
    return devmail_server


@pytest.fixture
def devmail_redis(services: tuple[Server, Server, Server], redis: Redis) -> Iterator[Redis]:
    """A client on the dev-mail app's Redis database (1), emptied like the rest before the test."""
    client = Redis.from_url(re.sub(r"/0$", "/1", services[0].url), decode_responses=True)
    yield client
    client.close()


def localhost_url(app: App) -> str:
    """The app's PUBLIC_URL: http://localhost:<port>, where passkeys work and mail links point."""
    return f"http://localhost:{app.port}"


@dataclass
class Account:
    first: str
    last: str
    email: str
    password: str = PASSWORD

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}".strip()


def new_account(first: str = "Ada", last: str = "Lovelace") -> Account:
    return Account(first, last, f"{first.lower()}.{uuid.uuid4().hex[:10]}@example.com")


def create_account(app: App, first: str = "Ada", last: str = "Lovelace") -> Account:
    """An account made through the app's sign-up form over plain HTTP (quicker than a browser)."""
    account = new_account(first, last)
    with httpx.Client(base_url=app.url) as client:
        response = client.post(
            "/signup",
            data={"first_name": first, "last_name": last, "email": account.email, "password": PASSWORD},
        )
        assert response.status_code == 303, response.text
        # Signed out again, so the account's only sessions are the browsers' own.
        assert client.post("/logout").status_code == 303
    return account


# -- the browser ----------------------------------------------------------------------------


@pytest.fixture(scope="package")
def browser(_tools: None) -> Iterator[Browser]:
    executable = chromium_path()
    assert executable is not None
    with sync_playwright() as playwright:
        # Playwright turns the back/forward cache off by default; a real browser has it on, and
        # the back-button tests are about what it would show.
        browser = playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            ignore_default_args=["--disable-back-forward-cache"],
        )
        yield browser
        browser.close()


@dataclass
class Problems:
    """What went wrong in a page's JavaScript: uncaught errors, console errors (CSP refusals)."""

    errors: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        # Chrome logs every 4xx response as "Failed to load resource"; the app answers a bad form
        # with 401/409/422 on purpose, so only other errors count (a CSP refusal, a JS error).
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(f"console: {message.text} ({message.location['url']})")


@pytest.fixture
def new_context(browser: Browser, app: App) -> Iterator[Callable[..., BrowserContext]]:
    """Make a browser context (its own cookies) on the shared app; JavaScript on unless js=False."""
    contexts: list[BrowserContext] = []
    problems = Problems()

    def make(js: bool = True, base_url: str | None = None, **options: Any) -> BrowserContext:
        defaults: dict[str, Any] = {"viewport": VIEWPORT, "color_scheme": "light", "locale": "en-GB"}
        context = browser.new_context(
            base_url=base_url or app.url, java_script_enabled=js, **{**defaults, **options}
        )
        context.on("page", problems.watch)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()
    assert not problems.errors, "\n".join(problems.errors)


@pytest.fixture(params=[True, False], ids=["js", "nojs"])
def js(request: pytest.FixtureRequest) -> bool:
    """Run the test with JavaScript on, then with it off (plain form posts and redirects)."""
    value: bool = request.param
    return value


@pytest.fixture
def page(new_context: Callable[..., BrowserContext]) -> Page:
    """A page with JavaScript on, on the shared app."""
    return new_context().new_page()


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Callable[[Page, str], Path]:
    """Save a PNG of the page's key moment under tests/e2e/artifacts/<test>/<n>-<name>.png.

    caret="initial": hiding the caret makes Playwright insert a <style>, which the app's CSP
    (style-src 'self') refuses, and the refusal would show up as a console error.
    """
    folder = ARTIFACTS / re.sub(r"[^\w.-]+", "_", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    count = 0

    def take(page: Page, name: str) -> Path:
        nonlocal count
        count += 1
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{count:02d}-{name}.png"
        page.screenshot(path=path, caret="initial")
        return path

    return take


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the test (item.report_call...), for fixtures that must know."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def docs_screenshot(request: pytest.FixtureRequest) -> Iterator[Callable[[Page, str], None]]:
    """Picture the page for docs/<name>, moved there only once the test has passed.

    As the README's home picture: written when missing, refreshed with E2E_UPDATE_SCREENSHOT=1.
    """
    pending: list[tuple[Path, Path]] = []

    def take(page: Page, name: str) -> None:
        target = DOCS / name
        if target.exists() and os.environ.get("E2E_UPDATE_SCREENSHOT") != "1":
            return
        assert page.viewport_size == VIEWPORT, page.viewport_size
        taken = ARTIFACTS / "docs" / f"{uuid.uuid4().hex}-{name}"
        taken.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=taken, caret="initial")
        pending.append((taken, target))

    yield take
    report = getattr(request.node, "report_call", None)
    for taken, target in pending:
        if report is not None and report.passed:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(taken, target)
        else:
            taken.unlink(missing_ok=True)


# -- helpers the tests share ----------------------------------------------------------------


def sign_in(page: Page, account: Account, *, remember: bool = False) -> None:
    """Sign in through the login form and wait for the home page."""
    page.goto("/login")
    page.get_by_label("Email").fill(account.email)
    page.get_by_label("Password").fill(account.password)
    if remember:
        page.get_by_label("Keep me signed in on this device").check()
    # exact: the page has a "Sign in with a passkey" button too (shown where WebAuthn is).
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("heading", name=f"Hello, {account.name}")).to_be_visible()


def sign_out(page: Page) -> None:
    """Sign out with the navbar's button and wait for the sign-in form."""
    page.get_by_test_id("navbar-logout").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")


def session_redis_key(context: BrowserContext) -> str:
    """The Redis key of the session whose cookie this browser context holds."""
    cookies = [c for c in context.cookies() if c["name"] in ("sid", "__Host-sid")]
    assert len(cookies) == 1, cookies
    session_id = cookies[0]["value"].partition(".")[0]
    return session_key(digest(session_id))


def age_session(redis: Redis, context: BrowserContext, seconds: int = 3600) -> None:
    """Make the context's sign-in `seconds` old, so sensitive changes ask for the password again."""
    key = session_redis_key(context)
    assert redis.hget(key, "u"), f"{key} is not a signed-in session"
    redis.hset(key, "t", int(time.time()) - seconds)


@dataclass
class VirtualAuthenticator:
    """Chromium's virtual platform authenticator (resident keys, user verification), over CDP."""

    cdp: CDPSession
    id: str

    def credentials(self) -> list[dict[str, Any]]:
        found = self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.id})
        credentials: list[dict[str, Any]] = found["credentials"]
        return credentials

    def remove(self, credential: dict[str, Any]) -> None:
        params = {"authenticatorId": self.id, "credentialId": credential["credentialId"]}
        self.cdp.send("WebAuthn.removeCredential", params)

    def add(self, credential: dict[str, Any]) -> None:
        self.cdp.send("WebAuthn.addCredential", {"authenticatorId": self.id, "credential": credential})


def add_virtual_authenticator(context: BrowserContext, page: Page) -> VirtualAuthenticator:
    """A platform authenticator for the page that says yes at once (presence and verification)."""
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    found = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return VirtualAuthenticator(cdp, found["authenticatorId"])


def goto_until(page: Page, url: str, locator: Locator, within: float = 10.0) -> None:
    """Load `url` until `locator` shows, for what the app does a moment after the request.

    Mail lands a little after the request that queued it (the background sender delivers it):
    each load waits a quarter of a second for the locator, all of them `within` seconds.
    """
    deadline = time.monotonic() + within
    while True:
        page.goto(url)
        try:
            expect(locator).to_be_visible(timeout=250)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def open_mail(page: Page, to: str, subject: str) -> None:
    """Open the newest mail to `to` with `subject` from the development inbox (/dev/mail)."""
    link = page.locator("tr[data-mail]", has_text=to).get_by_role("link", name=subject).first
    goto_until(page, "/dev/mail", link)
    link.click()
    expect(page.get_by_role("heading", level=1)).to_have_text(subject)


class Navigations:
    """Records the main frame's navigations (framenavigated) from now on."""

    def __init__(self, page: Page) -> None:
        self.urls: list[str] = []
        self.page = page
        page.on("framenavigated", self._navigated)

    def _navigated(self, frame: Frame) -> None:
        if frame == self.page.main_frame:
            self.urls.append(frame.url)


def mark_document(page: Page) -> None:
    """Tag the current document; `same_document` tells later whether the page was ever reloaded."""
    page.evaluate("() => { window.__e2eMark = true; }")


def same_document(page: Page) -> bool:
    return bool(page.evaluate("() => window.__e2eMark === true"))


def countdown_seconds(page: Page, selector: str = "#countdown [data-countdown-time]") -> int:
    minutes, seconds = page.locator(selector).inner_text().strip().split(":")
    return int(minutes) * 60 + int(seconds)


def wait_for_countdown(
    page: Page, condition: str, selector: str = "#countdown [data-countdown-time]"
) -> None:
    """Wait until the widget's seconds `s` satisfy a JavaScript condition, e.g. "s <= 3"."""
    page.wait_for_function(
        f"""() => {{
            const el = document.querySelector({selector!r});
            if (!el || el.hidden) return false;
            const [m, sec] = el.textContent.trim().split(":").map(Number);
            const s = m * 60 + sec;
            return {condition};
        }}""",
        timeout=20_000,
    )


@cache
def axe_source() -> str:
    return AXE.read_text()


def axe_violations(page: Page) -> list[dict[str, object]]:
    """Run axe-core on the page as it is now; return the violations of impact serious or critical."""
    # Once htmx has settled: for a moment after a swap, the new element wears the old one's
    # attributes (class="htmx-request", which dims its buttons), for CSS transitions.
    expect(page.locator(".htmx-request, .htmx-swapping, .htmx-settling")).to_have_count(0)
    # Evaluated, not added as a <script>: the page's CSP (script-src 'self') refuses inline script.
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(axe_source())
    violations: list[dict[str, object]] = page.evaluate(
        """async () => {
            const results = await axe.run(document, {resultTypes: ["violations"]});
            return results.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map(n => n.target.join(" ") + ": " + n.failureSummary),
            }));
        }"""
    )
    return [v for v in violations if v["impact"] in SERIOUS]
