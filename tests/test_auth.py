"""Who may do what: the users file, HTTP Basic and Bearer tokens, read access, the CLI helpers.

The write side (writes off/on, roles, name rules, the audit trail) is in tests/test_writes.py.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mtango.config import Config, ConfigError, load_config
from mtango.security.passwords import hash_password, verify
from mtango.security.users import token_digest
from tests.bridge import InProcessBridge, http
from tests.conftest import TEST_TIMEOUT_MS

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "robot-token-0123456789abcdefghijklmnopqrstuvwxyz"


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def write_users(path: Path) -> Path:
    users = {
        "users": {
            "alice": {"password": hash_password("alice-pw"), "roles": ["write"]},
            "bob": {"password": hash_password("bob-pw"), "roles": ["read"]},
            "robot": {"tokens": [token_digest(TOKEN)], "roles": ["operator"]},
        },
        "roles": {"operator": {"tango_allow": ["sys/tg_test/1/.*"], "pv_allow": ["cp:w:.*"]}},
    }
    path.write_text(json.dumps(users))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def users_file(tmp_path_factory) -> Path:
    return write_users(tmp_path_factory.mktemp("auth") / "users.yaml")


@pytest.fixture(scope="module")
def locked(control_system, users_file) -> Iterator[InProcessBridge]:
    """Reads and writes need a user."""
    running = InProcessBridge(Config(
        tango_host=control_system.tango_host, tango_timeout_ms=TEST_TIMEOUT_MS, auth="basic",
        users_file=str(users_file), read_access="authenticated", writes="on",
    )).start()
    yield running
    running.stop()


def test_reads_need_a_user_when_configured(locked) -> None:
    url = f"{locked.base}/tango/rest/rc3"
    refused = http("GET", url)
    assert refused.status == 401
    assert refused.headers["www-authenticate"].startswith('Basic realm="mtango-bridge"')
    assert refused.json()["errors"][0]["reason"] == "Unauthorized"
    assert http("GET", url, basic("alice", "wrong")).status == 401
    assert http("GET", url, basic("nobody", "alice-pw")).status == 401
    assert http("GET", url, {"Authorization": "Bearer not-a-token"}).status == 401
    assert http("GET", url, {"Authorization": "Digest x"}).status == 401
    assert http("GET", url, {"Authorization": "Basic %%%"}).status == 401
    for headers in (basic("alice", "alice-pw"), basic("bob", "bob-pw"),
                    {"Authorization": f"Bearer {TOKEN}"}):
        reply = http("GET", url, headers)
        assert reply.status == 200, reply.body
        assert reply.json()["x-auth-method"] == "basic"
    # Checked again from memory (argon2 is slow on purpose): still right, still refusing.
    assert http("GET", url, basic("alice", "alice-pw")).status == 200
    assert http("GET", url, basic("alice", "alice-pw!")).status == 401


def test_health_probes_need_no_user(locked) -> None:
    assert http("GET", f"{locked.base}/health/live").status == 200
    assert http("GET", f"{locked.base}/health/ready").status in (200, 503)
    assert http("GET", f"{locked.base}/metrics").status == 401


def test_preflights_need_no_user(locked) -> None:
    reply = http("OPTIONS", f"{locked.base}/tango/rest/rc3/hosts", {
        "Origin": "http://page.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert reply.status in (200, 204), reply.body


def test_anonymous_reads_by_default(bridge) -> None:
    reply = http("GET", f"{bridge.base}/tango/rest/rc3")
    assert reply.status == 200 and reply.json()["x-auth-method"] == "none"


def test_the_users_file_is_checked_at_start(tmp_path) -> None:
    def problem(content: dict) -> str:
        path = tmp_path / "users.yaml"
        path.write_text(json.dumps(content))
        with pytest.raises(ConfigError) as caught:
            load_config(env={}, overrides={"auth": "basic", "users_file": str(path)})
        return str(caught.value)

    assert "argon2 hash" in problem({"users": {"a": {"password": "plain", "roles": ["write"]}}})
    assert "unknown role" in problem({"users": {"a": {"roles": ["boss"]}}})
    assert "SHA-256" in problem({"users": {"a": {"tokens": ["short"], "roles": ["read"]}}})
    assert "built in" in problem({"users": {}, "roles": {"write": {}}})
    assert "users:" in problem({"people": {}})
    with pytest.raises(ConfigError, match="users_file"):
        load_config(env={"MTANGO_AUTH": "basic"})
    with pytest.raises(ConfigError, match="needs auth: basic"):
        load_config(env={"MTANGO_READ_ACCESS": "authenticated"})
    with pytest.raises(ConfigError, match="writes must be one of"):
        load_config(env={"MTANGO_WRITES": "yes"})


def test_hash_password_and_new_token_commands() -> None:
    done = subprocess.run([sys.executable, "main.py", "hash-password"], input="pa ss:wörd\n",
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    hashed = done.stdout.strip().splitlines()[-1]
    assert hashed.startswith("$argon2id$") and verify(hashed, "pa ss:wörd")
    assert not verify(hashed, "pa ss:word")
    done = subprocess.run([sys.executable, "main.py", "new-token"], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    lines = done.stdout.strip().splitlines()
    token = lines[0].rsplit(" ", 1)[1]
    assert lines[-1] == token_digest(token)


def test_access_answers_per_user_and_target(locked, tango_host) -> None:
    """``/sys/access`` (what the web page asks before offering write controls) says what
    ``Access.check`` would say to a write of each target, for the request's user."""
    allowed = f"{tango_host}/sys/tg_test/1/double_scalar"
    other = f"{tango_host}/sys/alarm/1/alarm_scalar"
    url = f"/tango/rest/sys/access?tango={allowed}&tango={other}&pv=cp:w:double&pv=cp:double"

    def verdicts(headers: dict[str, str]) -> tuple[str, list[tuple[bool, str | None]]]:
        reply = locked.get(url, headers=headers)
        assert reply.status == 200, reply.body
        body = reply.json()
        assert body["writes"] is True and body["auth"] == "basic"
        return body["user"], [(t["write"], t.get("reason")) for t in body["targets"]]

    assert verdicts(basic("alice", "alice-pw")) == ("alice", [(True, None)] * 4)
    assert verdicts(basic("bob", "bob-pw")) == ("bob", [(False, "WriteDenied")] * 4)
    assert verdicts({"Authorization": f"Bearer {TOKEN}"}) == ("robot", [
        (True, None), (False, "WriteDenied"), (True, None), (False, "WriteDenied")])
    # Reads need a user here (read_access: authenticated), and wrong credentials are a 401.
    assert locked.get(url).status == 401
    assert locked.get(url, headers=basic("alice", "wrong")).status == 401


def test_access_without_credentials_when_reads_are_open(control_system, users_file,
                                                        tango_host) -> None:
    running = InProcessBridge(Config(
        tango_host=control_system.tango_host, auth="basic", users_file=str(users_file),
        writes="on")).start()
    try:
        body = running.get(f"/tango/rest/sys/access?tango={tango_host}/sys/tg_test/1/x").json()
        assert body["user"] == "anonymous"
        assert body["targets"][0]["write"] is False
        assert body["targets"][0]["reason"] == "Unauthorized"
    finally:
        running.stop()
