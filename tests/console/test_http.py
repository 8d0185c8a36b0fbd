"""The console's server side over plain HTTP: the session cookie's flags, CSRF on every change, the security
headers, and that a token's session reaches only its own subtree and ends when the token is revoked."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from litestar.testing import TestClient

from app.api.app import create_app
from app.config import Settings
from app.console import MAX_SESSIONS, SESSION_S, Sessions
from app.sdk import Token
from app.store.memory import MemoryStore
from tests.console.conftest import call, chain_of, mint
from tests.keys import ADMIN_KEY
from tests.processes import Service


@contextmanager
def signed_in(service: Service, credential: str) -> Iterator[tuple[httpx.Client, str]]:
    """A client holding a console session's cookie, and the session's CSRF token."""
    with httpx.Client(base_url=service.url, timeout=10) as client:
        r = client.post("/console/api/session", json={"credential": credential})
        assert r.status_code == 200, r.text
        yield client, r.json()["csrf"]


def test_the_session_cookie_is_httponly_samesite_strict_and_ends_after_8_hours(service: Service) -> None:
    r = httpx.post(service.url + "/console/api/session", json={"credential": ADMIN_KEY})
    assert r.status_code == 200, r.text
    cookie = r.headers["set-cookie"]
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/console", f"max-age={SESSION_S}"} <= flags
    assert "secure" not in flags  # the service is reached over http here
    assert ADMIN_KEY not in r.text and ADMIN_KEY not in cookie  # the credential never goes back to the browser
    assert SESSION_S == 8 * 3600


def test_the_cookie_is_secure_when_the_service_is_reached_over_https(tmp_path: Path) -> None:
    env = {"AGENTCAPS_DATA_DIR": str(tmp_path), "AGENTCAPS_STORE": "memory://", "AGENTCAPS_ADMIN_KEYS": ADMIN_KEY}
    settings = Settings.from_env({**env, "AGENTCAPS_LOCATION": "https://caps.example"})
    with TestClient(create_app(settings, store=MemoryStore())) as client:
        r = client.post("/console/api/session", json={"credential": ADMIN_KEY})
    assert "; Secure" in r.headers["set-cookie"]


def test_every_change_without_the_csrf_token_is_refused(service: Service, http: httpx.Client) -> None:
    root = mint(http, tools=["search"])
    chain = chain_of(http, root)
    with signed_in(service, ADMIN_KEY) as (client, csrf):
        changes = [
            ("POST", "/console/api/revoke", {"token_id": _root_id(http, root), "chain": chain}),
            ("POST", "/console/api/approvals/x.y/approve", {}),
            ("POST", "/console/api/approvals/x.y/deny", {}),
            ("POST", "/console/api/inspect", {"token": root}),
            ("DELETE", "/console/api/session", None),
        ]
        for method, path, body in changes:
            for headers in ({}, {"x-csrf-token": "not-the-token"}, {"x-csrf-token": ""}):
                r = client.request(method, path, json=body, headers=headers)
                assert r.status_code == 401 and "CSRF" in r.json()["reason"], (method, path, r.text)
        assert call(http, root, "search").status_code == 200  # nothing was revoked
        assert client.get("/console/api/session").status_code == 200  # nor signed out
        assert client.post("/console/api/inspect", json={"token": root}, headers={"x-csrf-token": csrf}).is_success
        assert client.delete("/console/api/session", headers={"x-csrf-token": csrf}).is_success
        assert client.get("/console/api/session").status_code == 401


def _root_id(http: httpx.Client, token: str) -> str:
    token_id: str = http.post("/v1/inspect", json={"token": token}).json()["token_id"]
    return token_id


def test_sign_in_takes_only_json_and_a_live_credential(http: httpx.Client) -> None:
    # A cross-site form can post urlencoded or text/plain without a preflight: neither signs anyone in.
    form = http.post("/console/api/session", content=f"credential={ADMIN_KEY}", headers={"content-type": "text/plain"})
    assert form.status_code == 400
    wrong = http.post("/console/api/session", json={"credential": "ak_not_a_key_0123456789abcdef0123"})
    assert wrong.status_code == 401
    assert http.get("/console/api/approvals").status_code == 401  # no session, no data


def test_console_responses_carry_the_security_headers(http: httpx.Client) -> None:
    for path in ("/console", "/console/static/console.js", "/console/static/console.css", "/console/api/session"):
        r = http.get(path)
        assert r.headers["content-security-policy"].startswith("default-src 'self'"), path
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["referrer-policy"] == "no-referrer", path
        assert r.headers["x-frame-options"] == "DENY", path
    assert http.get("/console/static/..%2F__init__.py").status_code == 404  # only the page's own files
    assert "http" not in http.get("/console").text.replace("http-equiv", "")  # no outside URL in the page


def test_a_token_revokes_only_inside_its_own_subtree(service: Service, http: httpx.Client) -> None:
    root = mint(http, tools=["search"])
    other_root = mint(http, "elsewhere", tools=["search"])
    alice = str(Token.parse(root).attenuate(to="alice"))
    alice_child = str(Token.parse(alice).attenuate(to="helper"))
    bob = str(Token.parse(root).attenuate(to="bob"))
    root_id = _root_id(http, root)
    chains = {name: chain_of(http, t) for name, t in [("root", root), ("bob", bob), ("helper", alice_child)]}
    chains["other"] = chain_of(http, other_root)
    with signed_in(service, alice) as (client, csrf):

        def revoke(token_id: str, chain: str) -> httpx.Response:
            body = {"token_id": token_id, "chain": chain}
            return client.post("/console/api/revoke", json=body, headers={"x-csrf-token": csrf})

        for outside in ("root", "bob"):  # the parent and a sibling
            assert revoke(root_id, chains[outside]).status_code == 404
        assert revoke(_root_id(http, other_root), chains["other"]).status_code == 404
        assert all(call(http, t, "search").status_code == 200 for t in (root, bob, other_root, alice_child))
        assert revoke(root_id, chains["helper"]).status_code == 200  # a chain derived from its own
        assert call(http, alice_child, "search").json()["code"] == "revoked"
        assert call(http, alice, "search").status_code == 200
        revokes = http.get(
            "/v1/audit", params={"kind": "revoke"}, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        ).json()["events"]
        assert [(e["chain"], e["reason"]) for e in revokes] == [
            (chains["helper"], "revoked from the console by alice (hop 1)")
        ]
        # Its own chain too: after which its session ends, as its token no longer holds.
        assert revoke(root_id, chain_of(http, alice)).status_code == 200
        assert client.get("/console/api/session").status_code == 401
        assert call(http, root, "search").status_code == 200


def test_sessions_are_bounded_oldest_out_and_end_after_their_time() -> None:
    now = [1000.0]
    sessions = Sessions(lambda: now[0], limit=2)
    first, _ = sessions.open("a")
    second, _ = sessions.open("b")
    third, _ = sessions.open("c")
    assert sessions.get(first) is None and sessions.get(second) is not None and len(sessions) == 2
    now[0] += SESSION_S
    assert sessions.get(third) is None and sessions.get(None) is None
    assert MAX_SESSIONS == 10_000


@pytest.mark.parametrize("path", ["/console/api/approvals", "/console/api/audit", "/console/api/tokens"])
def test_reads_need_a_session(http: httpx.Client, path: str) -> None:
    assert http.get(path).status_code == 401
