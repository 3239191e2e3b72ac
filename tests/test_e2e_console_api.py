"""The console's API and sign-in against the real daemon: admin credentials only,
the request log's rows (routed, refused before routing, streamed, with bodies) and
filters, no secret anywhere, CSRF on the playground, the unwritable log path."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from conftest import MASTER_KEY, UPSTREAM_KEY, GatewayFactory, openai_entry
from test_e2e_api import CHAT, post, raw

from gatewayd.testing import FakeUpstream

CLIENT_KEY = "sk-client-SECRET-5555555555"
ADMIN_KEY = "sk-admin-SECRET-7777777777"


def config(upstream: FakeUpstream, **general: Any) -> dict[str, Any]:
    return {
        "model_list": [openai_entry("gpt", upstream, input_cost_per_token=0.001)],
        "general_settings": {"master_key": MASTER_KEY, **general},
        "keys": [
            {"name": "team-a", "key": CLIENT_KEY, "rpm": 100, "budget": {"usd": 5, "period": "1d"}},
            {"name": "ops", "key": ADMIN_KEY, "admin": True},
        ],
    }


def get(
    port: int, path: str, key: str = MASTER_KEY, **headers: str
) -> tuple[int, dict[str, str], Any]:
    status, hdrs, body = raw(
        port, "GET", path, headers={"authorization": f"Bearer {key}", **headers}
    )
    return (
        status,
        hdrs,
        json.loads(body) if hdrs.get("content-type") == "application/json" else body,
    )


def rows_when(port: int, query: str, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The request list once it holds ``n`` rows (the writer is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = get(port, f"/ui/api/requests?{query}")
        assert status == 200, body
        if len(body["rows"]) >= n or time.monotonic() > deadline:
            return body["rows"]  # type: ignore[no-any-return]
        time.sleep(0.05)


def secrets_absent(text: str) -> None:
    for secret in (MASTER_KEY, UPSTREAM_KEY, CLIENT_KEY, ADMIN_KEY):
        assert secret not in text


def test_only_admins_get_in(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    gw = gateway(config(upstream))
    assert get(gw.port, "/ui/api/overview")[0] == 200
    assert get(gw.port, "/ui/api/overview", ADMIN_KEY)[0] == 200
    assert get(gw.port, "/ui/api/overview", CLIENT_KEY)[0] == 401
    status, hdrs, _ = raw(gw.port, "GET", "/ui/api/overview")
    assert status == 401
    status, hdrs, _ = raw(gw.port, "GET", "/ui/")
    assert status == 303 and hdrs["location"] == "/ui/login"
    status, hdrs, page = raw(gw.port, "GET", "/ui/login")
    assert status == 200 and b"<form" in page
    assert "script-src 'self'" in hdrs["content-security-policy"]
    # The form: a wrong key is refused, the admin key gets a strict session cookie.
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert raw(gw.port, "POST", "/ui/login", f"key={CLIENT_KEY}".encode(), form)[0] == 401
    status, hdrs, _ = raw(gw.port, "POST", "/ui/login", f"key={ADMIN_KEY}".encode(), form)
    assert status == 303, hdrs
    cookie = hdrs["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain HTTP here (TLS would add it)
    secrets_absent(cookie)
    jar = cookie.split(";", 1)[0]
    status, _, body = raw(gw.port, "GET", "/ui/api/session", headers={"cookie": jar})
    session = json.loads(body)
    assert status == 200 and session["admin"] == "ops" and session["csrf_token"]
    # A forged cookie is refused.
    assert raw(gw.port, "GET", "/ui/api/session", headers={"cookie": jar[:-3] + "abc"})[0] == 401
    # The playground needs the CSRF token with a cookie.
    chat = json.dumps({**CHAT, "model": "gpt"}).encode()
    h = {"cookie": jar, "content-type": "application/json"}
    assert raw(gw.port, "POST", "/ui/api/playground/chat", chat, h)[0] == 403
    h["x-csrf-token"] = session["csrf_token"]
    status, hdrs, _ = raw(gw.port, "POST", "/ui/api/playground/chat", chat, h)
    assert status == 200 and hdrs["x-gatewayd-model"] == "gpt"


def test_rows_for_every_outcome_filtered_without_secrets(
    gateway: GatewayFactory, upstream: FakeUpstream, tmp_path: Path
) -> None:
    db = tmp_path / "requests.db"
    gw = gateway(config(upstream, request_log={"path": str(db), "store_bodies": True}))
    auth = {"authorization": f"Bearer {CLIENT_KEY}"}
    body = {**CHAT, "model": "gpt", "api_key": "sk-in-the-body-123456"}
    assert post(gw.port, "/v1/chat/completions", body, auth)[0] == 200
    assert post(gw.port, "/v1/chat/completions", {**CHAT, "model": "nope"}, auth)[0] == 404
    assert post(gw.port, "/v1/chat/completions", CHAT, {"authorization": "Bearer wrong"})[0] == 401
    stream = {**CHAT, "model": "gpt", "stream": True, "stream_options": {"include_usage": True}}
    status, _, _ = raw(
        gw.port,
        "POST",
        "/v1/chat/completions",
        json.dumps(stream).encode(),
        {**auth, "content-type": "application/json"},
    )
    assert status == 200
    rows = rows_when(gw.port, "", 4)
    assert [r["status"] for r in rows] == [200, 401, 404, 200]
    streamed, unauth, missing, first = rows
    assert streamed["stream"] and streamed["ttft_ms"] is not None and streamed["key"] == "team-a"
    assert first["key"] == "team-a" and first["alias"] == "gpt" and first["attempts"] == 1
    assert first["deployment"].startswith("openai/up-model@")
    assert first["prompt_tokens"] > 0 and first["cost_usd"] > 0
    assert unauth["key"] is None and missing["alias"] is None
    # Filters.
    assert [r["status"] for r in rows_when(gw.port, "status=4xx", 2)] == [401, 404]
    assert len(rows_when(gw.port, "key=team-a&alias=gpt", 2)) == 2
    assert rows_when(gw.port, "endpoint=/v1/nothing", 0) == []
    assert get(gw.port, "/ui/api/requests?status=bad")[0] == 400
    # Detail: bodies stored, with the secret in the body masked.
    status, _, detail = get(gw.port, f"/ui/api/requests/{first['id']}")
    assert status == 200 and detail["request_body"] and detail["response_body"]
    assert "sk-in-the-body-123456" not in detail["request_body"]
    assert json.loads(detail["request_body"])["messages"] == CHAT["messages"]
    # Keys: limits, spend this period and per day; overview: the deployment.
    status, _, keys = get(gw.port, "/ui/api/keys")
    team = next(k for k in keys["keys"] if k["name"] == "team-a")
    assert team["rpm"]["limit"] == 100 and team["budget"]["usd"] == 5
    assert team["per_day"] and team["per_day"][0]["requests"] >= 2
    status, _, overview = get(gw.port, "/ui/api/overview")
    dep = overview["aliases"][0]["deployments"][0]
    assert dep["state"] == "healthy" and overview["request_log"] == "sqlite"
    everything = json.dumps([rows, detail, keys, overview])
    secrets_absent(everything)
    secrets_absent(db.read_bytes().decode("latin-1"))


def test_an_unwritable_log_path_never_fails_a_request(
    gateway: GatewayFactory, upstream: FakeUpstream, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    gw = gateway(config(upstream, request_log={"path": str(blocker / "requests.db")}))
    for _ in range(3):
        assert (
            post(
                gw.port,
                "/v1/chat/completions",
                {**CHAT, "model": "gpt"},
                {"authorization": f"Bearer {CLIENT_KEY}"},
            )[0]
            == 200
        )
    deadline = time.monotonic() + 10
    while True:
        metrics = raw(gw.port, "GET", "/metrics")[2].decode()
        line = [
            x
            for x in metrics.splitlines()
            if x.startswith('gatewayd_request_log_dropped_total{reason="write_error"}')
        ]
        if line and float(line[0].split()[-1]) >= 3:
            break
        assert time.monotonic() < deadline, metrics[-2000:]
        time.sleep(0.1)
    assert get(gw.port, "/ui/api/requests")[0] == 503


def test_every_workers_rows_reach_one_log(
    gateway: GatewayFactory, upstream: FakeUpstream, tmp_path: Path
) -> None:
    from test_e2e_workers import answering_workers, children, wait_until

    db = tmp_path / "requests.db"
    cfg = config(upstream, request_log={"path": str(db)})
    cfg["general_settings"].pop("master_key")  # open: the helpers post without a key
    cfg["keys"] = []
    cfg["general_settings"]["ui"] = True
    gw = gateway(cfg, extra_args=["--workers", "2"])
    assert wait_until(lambda: len(children(gw.pid)) == 2), gw.log()
    assert wait_until(lambda: "2 workers listening" in gw.log()), gw.log()
    pids = children(gw.pid)
    assert answering_workers(gw.port, "gpt", pids) == pids
    answered = upstream.count()
    # One file, written by both workers' writers: one row per request, none lost.
    import sqlite3

    def rows() -> int:
        try:
            with sqlite3.connect(db) as c:
                return int(c.execute("SELECT COUNT(*) FROM requests").fetchone()[0])
        except sqlite3.OperationalError:
            return 0

    assert wait_until(lambda: rows() == answered), (rows(), answered)


def test_a_cache_hit_is_logged_as_cached(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    gw = gateway(config(upstream, cache={"type": "memory"}))
    auth = {"authorization": f"Bearer {CLIENT_KEY}"}
    statuses = [
        post(gw.port, "/v1/chat/completions", {**CHAT, "model": "gpt"}, auth) for _ in range(2)
    ]
    assert [s[1]["x-gatewayd-cache"] for s in statuses] == ["miss", "hit"]
    rows = rows_when(gw.port, "alias=gpt", 2)
    assert [r["cached"] for r in rows] == [True, False]
    assert rows[0]["cost_usd"] == 0 and rows[1]["cost_usd"] > 0
    assert [r["request_id"] for r in rows_when(gw.port, "cached=true", 1)] == [
        rows[0]["request_id"]
    ]


def test_a_request_log_path_given_on_reload_starts_logging(
    gateway: GatewayFactory, upstream: FakeUpstream, tmp_path: Path
) -> None:
    import signal
    import sqlite3

    cfg = config(upstream, ui=False)
    gw = gateway(cfg)
    auth = {"authorization": f"Bearer {CLIENT_KEY}"}
    assert post(gw.port, "/v1/chat/completions", {**CHAT, "model": "gpt"}, auth)[0] == 200
    master = {"authorization": f"Bearer {MASTER_KEY}"}
    # ui: false: no console at all (a 404, like any unknown path).
    assert raw(gw.port, "GET", "/ui/api/overview", headers=master)[0] == 404
    db = tmp_path / "later.db"
    cfg["general_settings"]["request_log"] = {"path": str(db)}
    gw.write_config(cfg)
    gw.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "config reloaded" not in gw.log():
        assert time.monotonic() < deadline, gw.log()
        time.sleep(0.05)
    assert post(gw.port, "/v1/chat/completions", {**CHAT, "model": "gpt"}, auth)[0] == 200

    def rows() -> list[Any]:
        try:
            with sqlite3.connect(db) as c:
                return c.execute("SELECT key, alias, status FROM requests").fetchall()
        except sqlite3.OperationalError:
            return []

    while not rows():
        assert time.monotonic() < deadline + 10, gw.log()
        time.sleep(0.05)
    assert rows() == [("team-a", "gpt", 200)]


def test_the_detail_lists_each_attempt(
    gateway: GatewayFactory, upstream: FakeUpstream, tmp_path: Path
) -> None:
    from gatewayd.testing.behaviours import Error

    db = tmp_path / "requests.db"
    gw = gateway(config(upstream, num_retries=1, request_log={"path": str(db)}))
    upstream.enqueue(Error(503, "upstream overloaded"))
    auth = {"authorization": f"Bearer {CLIENT_KEY}"}
    status, headers, _ = post(gw.port, "/v1/chat/completions", {**CHAT, "model": "gpt"}, auth)
    assert status == 200 and headers["x-gatewayd-attempts"] == "2"
    (row,) = rows_when(gw.port, "alias=gpt", 1)
    assert row["attempts"] == 2 and "attempt_log" not in row
    detail = get(gw.port, f"/ui/api/requests/{row['id']}")[2]
    log = detail["attempt_log"]
    assert [a["status"] for a in log] == [503, 200]
    assert log[0]["error"] == "upstream overloaded" and log[1]["error"] is None
    assert all(a["deployment"] == row["deployment"] and a["latency_ms"] >= 0 for a in log)


def test_a_deployment_down_by_health_check(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    from gatewayd.testing.behaviours import Error

    upstream.set_default(Error(503, "down for maintenance"))
    cfg = config(upstream, health_check_interval=0.2, cooldown_time=60)
    gw = gateway(cfg)
    deadline = time.monotonic() + 15
    while True:
        dep = get(gw.port, "/ui/api/overview")[2]["aliases"][0]["deployments"][0]
        if dep["state"] == "down_by_health_check":
            break
        assert time.monotonic() < deadline, dep
        time.sleep(0.1)
    assert dep["cooling_down_until"] > time.time() and "health check" in dep["last_error"]
