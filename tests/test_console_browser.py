"""The operator console in a real browser: Debian's chromium driven by Playwright
(``.ci/run`` installs it; Playwright's own browser download is not reachable). Signs
in, watches a deployment go from healthy to cooling down when its fake upstream fails,
filters the request list, runs the playground against the mock, and saves a screenshot
of each page under docs/console/ (shown in docs/console.md)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MASTER_KEY, GatewayFactory
from console_setup import MOCK_TEXT, SECRETS, chat, console_config

from gatewayd.testing import Error, FakeUpstream

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent.parent / "docs" / "console"
#: Every wait in the browser is bounded by this (milliseconds).
WAIT_MS = 20_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)"
)


@pytest.fixture
def browser() -> Iterator[object]:
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def test_console_in_the_browser(gateway: GatewayFactory, browser: object, tmp_path: Path) -> None:
    with FakeUpstream(content="from flaky") as flaky:
        gw = gateway(console_config(flaky, request_log={"path": str(tmp_path / "requests.db")}))
        for _ in range(3):
            assert chat(gw.port, "demo") == 200
            assert chat(gw.port, "flaky") == 200
        SHOTS.mkdir(parents=True, exist_ok=True)
        context = browser.new_context(viewport={"width": 1280, "height": 800})  # type: ignore[attr-defined]
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

        # Signed out: every page sends to the sign-in form.
        page.goto(f"{gw.url}/ui/requests")
        assert page.url.endswith("/ui/login")
        page.fill("#key", "sk-wrong-key")
        page.click("#signin-button")
        page.wait_for_selector("#failed:not([hidden])")
        page.screenshot(path=str(SHOTS / "login.png"))
        page.fill("#key", MASTER_KEY)
        page.click("#signin-button")
        page.wait_for_url(re.compile(r"/ui/$"))
        cookie = next(c for c in context.cookies() if c["name"] == "gatewayd_ui")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

        # Overview: flaky is healthy, then cooling down once its upstream fails.
        state = 'div.alias[data-alias="flaky"] td.state'
        page.wait_for_selector(f'{state}[data-state="healthy"]')
        page.wait_for_selector('#who:text("master key")')
        flaky.set_default(Error(500))
        # Past allowed_fails (1) consecutive failures: the deployment cools down.
        for _ in range(2):
            assert chat(gw.port, "flaky") >= 500
        page.wait_for_selector(f'{state}[data-state="cooldown"]')
        assert "cooling down" in page.inner_text(state)
        until = page.inner_text('div.alias[data-alias="flaky"] tr td:nth-child(4)')
        assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", until), until
        page.wait_for_selector("#chart rect.errbar")
        page.screenshot(path=str(SHOTS / "overview.png"), full_page=True)

        # Requests: filter by status, then by alias; a row opens its detail.
        page.goto(f"{gw.url}/ui/requests")
        page.wait_for_selector("#requests-table tbody tr.row")
        assert page.locator("#requests-table tbody tr.row").count() == 8
        page.fill('#filters input[name="status"]', "500")
        page.click("#apply-filters")
        page.wait_for_function(
            "() => { const r = [...document.querySelectorAll('#requests-table tbody tr.row')];"
            " return r.length > 0 && r.every(x => x.dataset.status === '500'); }"
        )
        assert page.locator("#requests-table tbody tr.row").count() == 2
        page.click("#clear-filters")
        page.fill('#filters input[name="alias"]', "demo")
        page.click("#apply-filters")
        page.wait_for_function(
            "() => { const r = [...document.querySelectorAll('#requests-table tbody tr.row')];"
            " return r.length === 3 && r.every(x => x.children[3].textContent === 'demo'); }"
        )
        page.click("#requests-table tbody tr.row >> nth=0")
        page.wait_for_selector("#detail:not([hidden])")
        assert "mock/demo" in page.inner_text("#detail-fields")
        assert "mock/demo" in page.inner_text("#detail-attempts tbody")
        page.screenshot(path=str(SHOTS / "requests.png"), full_page=True)

        # Keys: limits, what is left, spend.
        page.goto(f"{gw.url}/ui/keys")
        page.wait_for_selector('#keys-table tr[data-key="alice"]')
        alice = page.inner_text('#keys-table tr[data-key="alice"]')
        assert "/ 1000" in alice  # rpm: what is left of the limit
        assert "per 1d" in alice and "req" in alice
        page.screenshot(path=str(SHOTS / "keys.png"), full_page=True)

        # Playground: the mock's stream arrives in pieces, with the deployment's headers.
        page.goto(f"{gw.url}/ui/playground")
        page.wait_for_selector('#pg-alias option[value="demo"]', state="attached")
        page.select_option("#pg-alias", "demo")
        page.select_option("#pg-dialect", "chat")
        page.fill("#pg-prompt", "Say hello")
        page.click("#pg-send")
        page.wait_for_selector("#pg-output.done")
        assert page.inner_text("#pg-output") == MOCK_TEXT
        headers = page.inner_text("#pg-headers")
        assert "x-gatewayd-deployment: mock/demo" in headers
        assert "text/event-stream" in headers
        page.select_option("#pg-dialect", "messages")
        page.evaluate("document.getElementById('pg-output').classList.remove('done')")
        page.click("#pg-send")
        page.wait_for_selector("#pg-output.done")
        assert page.inner_text("#pg-output") == MOCK_TEXT
        page.screenshot(path=str(SHOTS / "playground.png"), full_page=True)

        # Nothing on any page is a secret, and the CSP let every script run.
        for path in ("/ui/", "/ui/requests", "/ui/keys", "/ui/playground"):
            page.goto(f"{gw.url}{path}")
            page.wait_for_load_state("networkidle")
            html = page.content()
            for secret in SECRETS:
                assert secret not in html
        assert not [e for e in errors if "Content Security Policy" in e], errors
        context.close()
