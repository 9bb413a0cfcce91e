"""The demo's closing lines (infra/demo.py start_web + print_web_access, as `txmon demo`
runs them after its summary) against the real Kafka and Cassandra: the printed URLs
answer, the printed curl scores with the printed key, the printed console login logs in,
and a second run reuses the running web application and the kept secrets without
showing them again.

The stream part of the demo is left out here (tests/integration/test_stream.py and
others cover it); the web application runs under a state dir and on a port of the
test's own, so it never meets one a developer's `txmon demo` left running.
"""

from __future__ import annotations

import json
import re
import socket
import stat
import subprocess

import httpx
import pytest

from txmon.infra import stack
from txmon.infra.demo import print_web_access, start_web
from txmon.infra.services.webapp import WebAppService
from txmon.webapp.api.keys import parse_key
from txmon.webapp.demo_access import API_KEY_FILE, CONSOLE_PASSWORD_FILE, CONSOLE_USER, read_secret


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _value(lines: list[str], label: str) -> str:
    """The text after ``label`` on the line that starts with it (indented)."""
    found = [line.strip()[len(label) :].strip() for line in lines if line.strip().startswith(label)]
    assert len(found) == 1, (label, lines)
    return found[0]


@pytest.fixture
def demo_settings(services, cassandra_session, tmp_path, monkeypatch):
    """The stack's settings with a state dir of the test's own; the demo's console user
    removed, as in a keyspace the demo never ran against."""
    monkeypatch.setenv("TXMON_API__PORT", str(_free_port()))
    monkeypatch.setenv("TXMON_API__REGISTRY_ROOT", str(tmp_path / "no-models"))  # rules only: starts faster
    cassandra_session.execute("DELETE FROM console_users WHERE username = %s", (CONSOLE_USER,))
    settings = services.model_copy(update={"state_dir": tmp_path / "state"})
    yield settings
    web = WebAppService.recorded(settings)
    if web is not None:
        web.stop()
    # What the test made in the shared keyspace goes, so a demo run there later makes its own.
    cassandra_session.execute("DELETE FROM console_users WHERE username = %s", (CONSOLE_USER,))
    parsed = parse_key(read_secret(settings.state_path / API_KEY_FILE) or "")
    if parsed is not None:
        cassandra_session.execute("DELETE FROM api_keys WHERE key_id = %s", (parsed[0],))


def _log_in(console: str, user: str, password: str) -> httpx.Response:
    with httpx.Client(timeout=30) as client:
        page = client.get(f"{console}login")
        assert page.status_code == 200 and 'name="password"' in page.text, page.text[:500]
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf is not None, page.text[:500]
        answer = client.post(
            f"{console}login", data={"csrf_token": csrf.group(1), "username": user, "password": password}
        )
        if answer.status_code == 303 and answer.headers["location"].endswith("/console/"):
            queue = client.get(console)  # the session cookie the login set
            assert queue.status_code == 200 and user in queue.text, queue.text[:500]
        return answer


def test_the_printed_urls_key_and_login_work_and_a_second_run_reuses_them(demo_settings):
    settings = demo_settings
    first: list[str] = []
    web = start_web(settings, first.append)
    assert web is not None and "starting" in first[0]
    print_web_access(settings, web, first.append)
    text = "\n".join(first)

    docs = _value(first, "scoring API docs")
    base = docs.removesuffix("/docs")
    assert base.startswith("http://127.0.0.1:")
    assert httpx.get(f"{base}/healthz", timeout=10).json() == {"status": "ok"}
    assert httpx.get(docs, timeout=10).status_code == 200

    # The key: printed once, the same as the file that keeps it (owner-only).
    key = _value(first, "API key").split()[0]
    key_file = settings.state_path / API_KEY_FILE
    assert key.startswith("txk_") and key_file.read_text().strip() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert text.count(key) == 1

    # The printed curl, run as printed: POST /v1/score with the kept key answers a verdict.
    curl = _value(first, "try it")
    assert curl.startswith("curl ") and f"{base}/v1/score" in curl
    done = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=60, check=False)
    verdict = json.loads(done.stdout)
    assert verdict["decision"] in {"APPROVE", "REVIEW", "BLOCK"} and 0 <= verdict["risk_score"] <= 100, verdict

    # The console: its login page loads, the printed login logs in, a wrong one does not.
    console_line = _value(first, "fraud-desk console")
    console, _, login = console_line.partition("  log in as ")
    user, _, password = login.partition(" / ")
    assert console == f"{base}/console/" and user == CONSOLE_USER and password
    password_file = settings.state_path / CONSOLE_PASSWORD_FILE
    assert password_file.read_text().strip() == password and stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert text.count(password) == 1
    assert _log_in(console, user, password).status_code == 303
    refused = _log_in(console, user, password + "x")
    assert refused.status_code == 303 and "error=1" in refused.headers["location"]

    assert "webapp" in {s.name for s in stack.status(settings) if s.healthy}
    assert first[-1].endswith("`txmon infra down` stops them.")

    # Second run: the same process, the same key and login, neither shown again.
    second: list[str] = []
    pid = web.process.pid()
    again = start_web(settings, second.append)
    assert again is not None and again.process.pid() == pid and "already running" in second[0]
    print_web_access(settings, again, second.append)
    again_text = "\n".join(second)
    assert key not in again_text and password not in again_text
    assert _value(second, "API key").startswith(f"in {key_file}")
    assert _value(second, "fraud-desk console").endswith(f"log in as {user}, password in {password_file}")
    assert key_file.read_text().strip() == key and password_file.read_text().strip() == password
    assert _log_in(console, user, password).status_code == 303

    # A demo user whose password the state dir no longer holds is left alone, and said so.
    password_file.unlink()
    third: list[str] = []
    print_web_access(settings, again, third.append)
    assert "password the demo does not hold" in "\n".join(third)
    assert not password_file.exists()
    assert _log_in(console, user, password).status_code == 303
