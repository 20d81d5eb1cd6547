"""The real app in a real Chromium: `python -m web` on a free port, driven through Playwright.

Each test gets fresh browser contexts (so fresh cookies) on a shared app server, or a server of
its own when it needs other settings (`serve(SESSION_IDLE_TIMEOUT="6")`). Nothing here sleeps to
synchronise: the tests wait on conditions with Playwright's auto-waiting `expect`.
"""

from __future__ import annotations

import os
import re
import shutil
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
    ConsoleMessage,
    Frame,
    Page,
    expect,
    sync_playwright,
)
from redis import Redis

from tests.conftest import PASSWORD
from tests.helpers.servers import AppProcess as App
from tests.helpers.servers import start_app
from web.embedded import Server

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ARTIFACTS = HERE / "artifacts"
AXE = HERE / "node_modules" / "axe-core" / "axe.min.js"
DOCS_SCREENSHOT = ROOT / "docs" / "screenshot-home.png"
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


@dataclass
class Account:
    first: str
    last: str
    email: str
    password: str = PASSWORD

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"


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


# -- helpers the tests share ----------------------------------------------------------------


def sign_in(page: Page, account: Account) -> None:
    """Sign in through the login form and wait for the home page."""
    page.goto("/login")
    page.get_by_label("Email").fill(account.email)
    page.get_by_label("Password").fill(account.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name=f"Hello, {account.name}")).to_be_visible()


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
