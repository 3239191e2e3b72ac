"""The console's HTTP side against the real daemon: who may use it, its headers, the
JSON API, no secret in any answer, CSRF on posts, the request log with an unwritable
path, and one log for every worker."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import MASTER_KEY, GatewayFactory, openai_entry
from console_setup import (
    ADMIN_KEY,
    SECRETS,
    USER_KEY,
    bearer,
    chat,
    console_config,
    get_json,
)
from test_e2e_api import raw

from gatewayd.testing import Error, FakeUpstream


def wait_until(pred: Callable[[], bool], limit: float = 15.0) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def sign_in(port: int, key: str) -> tuple[int, dict[str, str]]:
    status, headers, _ = raw(
        port,
        "POST",
        "/ui/login",
        f"key={key}".encode(),
        {"content-type": "application/x-www-form-urlencoded"},
    )
    return status, headers


def test_access_headers_and_no_secrets(gateway: GatewayFactory, tmp_path: Path) -> None:
    with FakeUpstream() as up:
        gw = gateway(
            console_config(up, request_log={"path": str(tmp_path / "r.db"), "store_bodies": True})
        )
        port = gw.port
        # Signed out: pages redirect to the form, the API answers 401.
        status, headers, _ = raw(port, "GET", "/ui/")
        assert status == 303 and headers["location"] == "/ui/login"
        status, headers, body = raw(port, "GET", "/ui/api/overview")
        assert status == 401 and json.loads(body)["error"]["status"] == 401
        # A plain client key is no admin, in a header or at sign-in.
        assert get_json(port, "/ui/api/overview", USER_KEY)[0] == 401
        status, headers = sign_in(port, USER_KEY)
        assert status == 303 and headers["location"] == "/ui/login?failed=1"
        assert "set-cookie" not in headers
        # The master key and an admin key, by Bearer header.
        for key in (MASTER_KEY, ADMIN_KEY):
            status, headers, body = get_json(port, "/ui/api/overview", key)
            assert status == 200 and {a["alias"] for a in body["aliases"]} == {"flaky", "demo"}
            csp = headers["content-security-policy"]
            assert "default-src 'none'" in csp and "script-src 'self'" in csp
            assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
            assert headers["cache-control"] == "no-store"
        # Sign-in: the cookie's flags (no TLS here: no Secure).
        status, headers = sign_in(port, ADMIN_KEY)
        assert status == 303 and headers["location"] == "/ui/"
        cookie = headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
        assert "Secure" not in cookie
        session = {"cookie": cookie.split(";", 1)[0]}
        status, _, body = raw(port, "GET", "/ui/api/session", None, session)
        info = json.loads(body)
        assert status == 200 and info["user"] == "ops" and info["csrf_token"]

        # Traffic: a stored body carrying a secret-looking string, and an error.
        assert chat(port, "demo", USER_KEY, content=f"leak {USER_KEY} {MASTER_KEY}") == 200
        up.set_default(Error(500))
        assert chat(port, "flaky") == 500

        def rows() -> list[dict[str, object]]:
            return list(get_json(port, "/ui/api/requests")[2]["data"])

        deployments = get_json(port, "/ui/api/deployments")[2]["data"]
        flaky = next(d for d in deployments if d["alias"] == "flaky")
        assert flaky["state"] == "healthy" and flaky["id"].startswith("openai/flaky-model")
        assert wait_until(lambda: len(rows()) == 2)
        newest, older = rows()
        assert newest["status"] == 500 and newest["alias"] == "flaky"
        assert older["key_name"] == "alice" and older["status"] == 200
        assert "key" not in older  # the key's name only
        filtered = get_json(port, "/ui/api/requests?status=500")[2]["data"]
        assert [r["id"] for r in filtered] == [newest["id"]]
        assert get_json(port, "/ui/api/requests?status=x")[0] == 400
        detail = get_json(port, f"/ui/api/requests/{older['id']}")[2]
        assert "[redacted]" in detail["request_body"]
        assert get_json(port, "/ui/api/requests/999999")[0] == 404

        # No secret in any page, script or API answer.
        answers = []
        for path in (
            "/ui/",
            "/ui/requests",
            "/ui/keys",
            "/ui/playground",
            "/ui/login",
            "/ui/static/console.js",
            "/ui/api/session",
            "/ui/api/overview",
            "/ui/api/deployments",
            "/ui/api/keys",
            "/ui/api/requests",
            f"/ui/api/requests/{older['id']}",
            f"/ui/api/requests/{newest['id']}",
        ):
            status, _, body = raw(port, "GET", path, None, session)
            assert status == 200, path
            answers.append(body.decode())
        for secret in SECRETS:
            assert not any(secret in a for a in answers), secret
        keys = get_json(port, "/ui/api/keys")[2]["data"]
        alice = next(k for k in keys if k["name"] == "alice")
        assert alice["rpm"]["limit"] == 1000 and alice["budget"]["usd"] == 5
        assert sum(d["requests"] for d in alice["spend_per_day"].values()) == 2


def test_playground_posts_need_the_csrf_token(gateway: GatewayFactory) -> None:
    with FakeUpstream() as up:
        gw = gateway(console_config(up))
        port = gw.port
        _, headers = sign_in(port, MASTER_KEY)
        session = {"cookie": headers["set-cookie"].split(";", 1)[0]}
        csrf = json.loads(raw(port, "GET", "/ui/api/session", None, session)[2])["csrf_token"]
        body = json.dumps({"model": "demo", "messages": [{"role": "user", "content": "hi"}]})
        post = {"content-type": "application/json", **session}
        status, _, _ = raw(port, "POST", "/ui/api/playground/chat", body.encode(), post)
        assert status == 403  # a cross-site form cannot know the token
        bad = {**post, "x-csrf-token": "0" * 64}
        assert raw(port, "POST", "/ui/api/playground/chat", body.encode(), bad)[0] == 403
        good = {**post, "x-csrf-token": csrf}
        status, headers, answer = raw(port, "POST", "/ui/api/playground/chat", body.encode(), good)
        assert status == 200 and headers["x-gatewayd-deployment"] == "mock/demo"
        assert json.loads(answer)["choices"][0]["message"]["content"]
        # A Bearer caller is not a browser session: no token needed.
        status, _, _ = raw(
            port,
            "POST",
            "/ui/api/playground/messages",
            json.dumps(
                {"model": "demo", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
            ).encode(),
            {"content-type": "application/json", **bearer(ADMIN_KEY)},
        )
        assert status == 200
        assert raw(port, "POST", "/ui/api/playground/nope", b"{}", good)[0] == 404
        # Signing out needs the token too, and clears the cookie.
        assert raw(port, "POST", "/ui/logout", b"", session)[0] == 403
        status, headers, _ = raw(port, "POST", "/ui/logout", b"", {**session, "x-csrf-token": csrf})
        assert status == 303 and "Max-Age=0" in headers["set-cookie"]


def test_ui_off_and_default_off_without_master_key(gateway: GatewayFactory) -> None:
    with FakeUpstream() as up:
        config = console_config(up, ui=False)
        gw = gateway(config)
        status, _, body = get_json(gw.port, "/ui/api/overview")
        assert status == 404 and body["error"]["code"] == "not_found"
        assert raw(gw.port, "GET", "/ui/")[0] == 401  # like any unknown path: auth first
        del config["general_settings"]["master_key"]
        del config["general_settings"]["ui"]
        gw2 = gateway(config)
        assert get_json(gw2.port, "/ui/api/overview", ADMIN_KEY)[0] == 404


def test_unwritable_request_log_never_fails_a_request(
    gateway: GatewayFactory, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with FakeUpstream() as up:
        gw = gateway(console_config(up, request_log={"path": str(blocker / "r.db")}))
        for _ in range(5):
            assert chat(gw.port, "demo") == 200
            assert chat(gw.port, "flaky") == 200

        def lost() -> float:
            text = raw(gw.port, "GET", "/metrics")[2].decode()
            for line in text.splitlines():
                if line.startswith('gatewayd_request_log_dropped_total{reason="write_error"}'):
                    return float(line.rsplit(" ", 1)[1])
            return 0.0

        assert wait_until(lambda: lost() == 10), lost()
        assert "request log" in gw.log()
        # The API says so plainly instead of failing the console.
        assert get_json(gw.port, "/ui/api/requests")[0] == 503


def test_every_worker_writes_one_log(gateway: GatewayFactory, tmp_path: Path) -> None:
    with FakeUpstream() as up:
        gw = gateway(
            console_config(up, request_log={"path": str(tmp_path / "r.db")}),
            extra_args=["--workers", "2"],
        )
        assert wait_until(lambda: "2 workers listening" in gw.log(), 30), gw.log()
        ids = set()
        for i in range(40):
            status, _, _ = raw(
                gw.port,
                "POST",
                "/v1/chat/completions",
                json.dumps(
                    {"model": "demo", "messages": [{"role": "user", "content": "x"}]}
                ).encode(),
                {
                    "content-type": "application/json",
                    "x-request-id": f"req-{i}",
                    **bearer(USER_KEY),
                },
            )
            assert status == 200
            ids.add(f"req-{i}")

        def logged() -> set[str]:
            rows = get_json(gw.port, "/ui/api/requests?limit=500")[2]["data"]
            return {r["request_id"] for r in rows}

        assert wait_until(lambda: logged() == ids, 20), logged() ^ ids


def test_a_rows_detail_lists_its_attempts(gateway: GatewayFactory) -> None:
    with FakeUpstream() as a, FakeUpstream() as b:
        config = console_config(a)
        config["model_list"].append(openai_entry("flaky", b, "b"))
        config["general_settings"]["num_retries"] = 2
        gw = gateway(config)
        a.set_default(Error(503))
        b.set_default(Error(503))
        assert chat(gw.port, "flaky") == 503

        def newest() -> dict[str, Any]:
            rows = get_json(gw.port, "/ui/api/requests")[2]["data"]
            return dict(rows[0]) if rows else {}

        assert wait_until(lambda: newest().get("status") == 503)
        row = newest()
        detail = get_json(gw.port, f"/ui/api/requests/{row['id']}")[2]
        notes = detail["attempt_log"]
        assert len(notes) == row["attempts"] >= 2, detail
        assert all(n["status"] == 503 and n["error"] for n in notes), notes
        assert {n["deployment"].split("@")[0] for n in notes} <= {"openai/flaky-model", "openai/b"}
        # One clean attempt: the row itself is its attempt.
        assert chat(gw.port, "demo") == 200
        assert wait_until(lambda: newest().get("alias") == "demo")
        one = get_json(gw.port, f"/ui/api/requests/{newest()['id']}")[2]["attempt_log"]
        assert [n["deployment"] for n in one] == ["mock/demo"] and one[0]["status"] == 200
