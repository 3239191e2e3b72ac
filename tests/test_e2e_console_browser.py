"""The console in a real browser: Debian's chromium driven by Playwright. Sign in, watch
a deployment go from healthy to cooling down when its upstream fails, filter the
request list and open a row, read the keys' spend, stream from the mock in the
playground. A screenshot of each page goes to docs/console/ (shown in docs/console.md)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import MASTER_KEY, ROOT, GatewayFactory, openai_entry
from test_e2e_api import CHAT, post

from gatewayd.testing import FakeUpstream
from gatewayd.testing.behaviours import Error

CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "docs" / "console"
TEAM_KEY = "sk-team-SECRET-1212121212"
MOCK_TEXT = "Streamed by the mock for the console test."

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed (.ci/run installs it)"
)

# A page's wait (ms): generous for a busy machine, bounded all the same.
WAIT = 20_000


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def test_the_console_in_a_browser(
    gateway: GatewayFactory, upstream: FakeUpstream, browser: Any
) -> None:
    from playwright.sync_api import expect

    gw = gateway(
        {
            "model_list": [
                openai_entry("gpt", upstream, input_cost_per_token=0.00001),
                {
                    "model_name": "demo",
                    "params": {
                        "model": "mock/demo",
                        "mock_response": MOCK_TEXT,
                        "mock_stream_delay_ms": 5,
                    },
                },
            ],
            "general_settings": {
                "master_key": MASTER_KEY,
                "allowed_fails": 1,
                "cooldown_time": 120,
            },
            "keys": [
                {
                    "name": "team-a",
                    "key": TEAM_KEY,
                    "rpm": 600,
                    "budget": {"usd": 10, "period": "30d"},
                }
            ],
        }
    )
    team = {"authorization": f"Bearer {TEAM_KEY}"}
    for _ in range(3):
        assert post(gw.port, "/v1/chat/completions", {**CHAT, "model": "gpt"}, team)[0] == 200
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    # Sign in: /ui sends us to the form; a wrong key is refused, the master key gets in.
    page.goto(f"{gw.url}/ui")
    assert page.url.endswith("/ui/login")
    page.fill("#key", "sk-wrong-key-000000")
    page.click("#signin")
    page.wait_for_load_state()
    assert page.locator("#error").count() == 1, page.content()
    page.fill("#key", MASTER_KEY)
    page.click("#signin")
    page.wait_for_load_state()
    assert page.url.endswith("/ui/"), (page.url, page.context.cookies(), page.content()[-600:])
    page.wait_for_selector("#who:has-text('master key')", timeout=WAIT)

    # Overview: the deployment is healthy, then cooling down once its upstream fails.
    dep = '#deployments tr[data-deployment^="openai/up-model@"]'
    page.wait_for_selector(f'{dep}[data-state="healthy"]', timeout=WAIT)
    upstream.set_default(Error(500))
    for _ in range(2):
        assert post(gw.port, "/v1/chat/completions", {**CHAT, "model": "gpt"}, team)[0] >= 500
    page.wait_for_selector(f'{dep}[data-state="cooling_down"]', timeout=WAIT)
    assert "cooling down until" in page.inner_text(dep)
    page.screenshot(path=str(SHOTS / "overview.png"), full_page=True)

    # Requests: the list, filtered to errors; a row opens its detail.
    page.click("a[data-page=requests]")
    page.wait_for_selector("#requests tbody tr", timeout=WAIT)
    aliases = page.locator("#requests tbody tr td:nth-child(4)").all_inner_texts()
    assert aliases.count("gpt") == 5, aliases
    page.fill("#filters input[name=status]", "5xx")
    page.click("#apply")
    expect(page.locator("#requests tbody tr")).to_have_count(2, timeout=WAIT)
    statuses = page.locator("#requests tbody tr td:nth-child(7)").all_inner_texts()
    assert all(s.startswith("5") for s in statuses), statuses
    page.click("#requests tbody tr >> nth=0")
    page.wait_for_selector("#detail:not([hidden])", timeout=WAIT)
    detail = json.loads(page.inner_text("#detail-body"))
    assert detail["alias"] == "gpt" and detail["key"] == "team-a" and detail["status"] >= 500
    page.screenshot(path=str(SHOTS / "requests.png"), full_page=True)

    # Keys: limits, what is left, spend per day.
    page.click("a[data-page=keys]")
    page.wait_for_selector("#keys tbody tr", timeout=WAIT)
    text = page.inner_text("#keys tbody tr")
    assert "team-a" in text and "of 600" in text and "of $10" in text, text
    page.screenshot(path=str(SHOTS / "keys.png"), full_page=True)

    # Playground: the mock, in the Messages dialect, streamed, with the gateway's headers.
    page.click("a[data-page=playground]")
    page.wait_for_selector("#play-alias option[value=demo]", state="attached", timeout=WAIT)
    page.select_option("#play-alias", "demo")
    page.select_option("#play-dialect", "messages")
    page.fill("#play-prompt", "Hello from the browser test")
    page.click("#play-send")
    page.wait_for_selector("#play-output[data-done=true]", timeout=WAIT)
    assert page.inner_text("#play-output").strip() == MOCK_TEXT
    headers = page.inner_text("#play-headers")
    assert "HTTP 200" in headers and "x-gatewayd-deployment: mock/demo" in headers, headers
    page.screenshot(path=str(SHOTS / "playground.png"), full_page=True)

    # The playground's request is in the log, and nothing the page saw holds a secret.
    page.click("a[data-page=requests]")
    page.fill("#filters input[name=status]", "")
    page.fill("#filters input[name=alias]", "demo")
    page.click("#apply")
    # (no wait_for_function: the page's CSP forbids the eval it needs)
    expect(page.locator("#requests tbody tr")).to_have_count(1, timeout=WAIT)
    assert page.inner_text("#requests tbody tr td:nth-child(4)") == "demo"
    html = page.content()
    for secret in (MASTER_KEY, TEAM_KEY, "sk-upstream-SECRET"):
        assert secret not in html
    assert not [e for e in errors if "Content Security Policy" in e], errors

    # Sign out (a POST with the CSRF token): the cookie is gone, /ui asks again.
    page.click("#logout")
    page.wait_for_url("**/ui/login", timeout=WAIT)
    assert not [c for c in page.context.cookies() if c["name"] == "gatewayd_ui"]
    page.goto(f"{gw.url}/ui/")
    assert page.url.endswith("/ui/login")
