"""``gatewayd check-config FILE`` and ``twistd gateway --check-config``: the report and
the exit status (0 valid, 1 warnings with --strict, 2 errors), run as the real commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gatewayd.cli import check_config_command

VALID = """
model_list:
  - model_name: smart
    params: {model: openai/gpt-4o, api_key: sk-very-secret-123, weight: 3,
             headers: {x-tenant-token: tok-hidden-456}}
  - model_name: smart
    params: {model: openai/gpt-4o-mini, api_base: http://10.0.0.7:8000/v1, api_key: sk-other-789}
  - model_name: local
    params: {model: ollama/llama3, api_base: http://127.0.0.1:11434}
general_settings:
  routing_strategy: least-busy
  fallbacks: [{smart: [local]}]
  alias_settings:
    local: {routing_strategy: simple-shuffle}
"""

WARNING = VALID + "  retry_policy: {}\n"
BROKEN = VALID.replace("least-busy", "fastest-please")
SECRETS = ("sk-very-secret-123", "tok-hidden-456", "sk-other-789")


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_valid_config_is_described_without_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check_config_command([_write(tmp_path, VALID)]) == 0
    out = capsys.readouterr().out
    assert "config is valid" in out
    assert "smart" in out and "local" in out
    assert "openai/gpt-4o@api.openai.com" in out
    assert "api_base=http://10.0.0.7:8000/v1" in out
    assert "fallbacks: local" in out
    # the general strategy, and the per-alias one
    smart, local = out.split("\n  smart\n")[1], out.split("\n  local\n")[1]
    assert smart.splitlines()[0].strip() == "routing_strategy: least-busy"
    assert local.splitlines()[0].strip() == "routing_strategy: simple-shuffle"
    assert "warnings: 0" in out
    for secret in SECRETS:
        assert secret not in out


def test_warnings_fail_only_with_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, WARNING)
    assert check_config_command([path]) == 0
    out = capsys.readouterr().out
    assert "warnings: 1" in out and "retry_policy" in out
    assert check_config_command([path, "--strict"]) == 1
    err = capsys.readouterr().err
    assert "retry_policy" in err and "--strict" in err


def test_errors_exit_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config_command([_write(tmp_path, BROKEN)]) == 2
    err = capsys.readouterr().err
    assert "general_settings.routing_strategy" in err and "fastest-please" in err
    assert check_config_command([str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read config file" in capsys.readouterr().err


def test_bad_command_line_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config_command([]) == 2
    assert "Usage: gatewayd check-config" in capsys.readouterr().err


def _bin(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


@pytest.mark.parametrize(
    ("text", "strict", "status"),
    [(VALID, False, 0), (WARNING, False, 0), (WARNING, True, 1), (BROKEN, False, 2)],
)
def test_the_installed_commands(tmp_path: Path, text: str, strict: bool, status: int) -> None:
    path = _write(tmp_path, text)
    flag = ["--strict"] if strict else []
    for argv in (
        [_bin("gatewayd"), "check-config", path, *flag],
        [_bin("twistd"), "-n", "gateway", "-c", path, "--check-config", *flag],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert done.returncode == status, (argv, done.stdout, done.stderr)
        shown = done.stdout + done.stderr
        assert ("config error" in shown) == (status == 2)
        for secret in SECRETS:
            assert secret not in shown
    assert not (tmp_path / "twistd.pid").exists()


def test_fleet_settings_are_described(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = """
model_list:
  - model_name: "ollama/*"
    params: {model: "ollama/*", api_base: "http://10.0.0.5:11434", discover: true}
  - model_name: llama
    params: {model: hosted_vllm/llama, api_base: "http://10.0.0.8:8000/v1",
             health_check: {completion: true, interval: 5}}
general_settings:
  health_check_interval: 15
  hedge: {after_ms: 300}
  alias_settings:
    llama: {routing_strategy: latency-based-routing, hedge: {after_quantile: 0.95}}
"""
    assert check_config_command([_write(tmp_path, text)]) == 0
    out = capsys.readouterr().out
    assert "hedge: after 300 ms, max_extra 1, budget 10 %" in out
    assert "hedge: after the p95 of time to first byte" in out
    assert "routing_strategy: latency-based-routing" in out
    assert "discover=true" in out and "health_check=completion/5s" in out
    assert "health checks: every 15 s" in out


def test_json_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config_command([_write(tmp_path, WARNING), "--json", "--strict"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "warnings" and doc["exit_status"] == 1
    smart = doc["aliases"]["smart"]
    assert smart["routing_strategy"] == "least-busy" and smart["fallbacks"] == ["local"]
    assert smart["deployments"][0]["id"] == "openai/gpt-4o@api.openai.com"
    assert smart["deployments"][0]["api_key_set"] is True
    assert any("retry_policy" in w for w in doc["warnings"])
    assert check_config_command([_write(tmp_path, BROKEN), "--json"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "error"
    assert doc["error"]["path"] == "general_settings.routing_strategy"
    text = json.dumps(doc)
    for secret in SECRETS:
        assert secret not in text


def test_twistd_check_config_json(tmp_path: Path) -> None:
    path = _write(tmp_path, VALID)
    argv = [_bin("twistd"), "-n", "gateway", "-c", path, "--check-config", "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["aliases"]["local"]["routing_strategy"] == "simple-shuffle"
