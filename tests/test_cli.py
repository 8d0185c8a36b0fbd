"""The agentcaps CLI, in-process: offline attenuate/inspect, keys, and mint/verify/revoke against a service."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from app.cli import main
from app.config import MASTER_KEYS_FILE, load_or_create_ring
from app.token.keys import KeyRing
from app.token.mint import mint
from tests.keys import ADMIN_KEY, WRONG_ADMIN_KEY
from tests.processes import Service


@pytest.fixture
def root_token() -> str:
    token, _ = mint(load_ring(), "http://agentcaps.test", ["delegate = orchestrator", "budget <= 10 USD", "depth <= 1"])
    return token


def load_ring() -> KeyRing:
    return KeyRing.parse("k1:" + "A" * 43)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


def test_attenuate_then_inspect_shows_the_tree(capsys: pytest.CaptureFixture[str], root_token: str) -> None:
    code, child, _ = run(
        capsys, "attenuate", root_token, "--to", "buyer", "--budget", "5 USD", "--tools", "pay", "--arg", "amount=<= 3"
    )
    assert code == 0
    code, tree, _ = run(capsys, "inspect", child)
    assert code == 0
    assert "hop 1: buyer" in tree and "    arg.amount <= 3" in tree and '"budgets": {"USD": "5.00"}' in tree
    code, out, _ = run(capsys, "inspect", child, "--json")
    view = json.loads(out)
    assert view["delegation"] == ["orchestrator", "buyer"] and view["verified"] is False
    assert view["limits"]["delegations_left"] == 0


def test_attenuate_reads_the_token_from_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, root_token: str
) -> None:
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO(root_token + "\n"))
    code, out, _ = run(capsys, "attenuate", "-", "--tools", "search", "--json")
    assert code == 0 and json.loads(out)["caveats"][-1] == "tools in search"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--budget", "11 USD"], "more than the 10.00 USD"),
        (["--to", "a", "--max-depth", "0"], None),
        (["--arg", "amount"], "--arg needs PATH=OP VALUE"),
        (["--expires-at", "yesterday"], "expires_at"),
    ],
)
def test_bad_input_is_one_line_on_stderr_with_exit_code_2(
    capsys: pytest.CaptureFixture[str], root_token: str, argv: list[str], message: str | None
) -> None:
    code, out, err = run(capsys, "attenuate", root_token, *argv)
    if message is None:  # this one is fine: it checks the next case has a token one hop deeper
        assert code == 0
        code, out, err = run(capsys, "attenuate", out, "--to", "b")
        message = "no further delegation"
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_attenuate_refuses_a_seventeenth_budget(capsys: pytest.CaptureFixture[str], root_token: str) -> None:
    token = root_token  # one budget already
    for _ in range(15):
        code, token, _ = run(capsys, "attenuate", token, "--budget", "10 USD")
        assert code == 0
    code, out, err = run(capsys, "attenuate", token, "--budget", "1 USD")
    assert (code, out) == (2, "")
    assert err == "agentcaps attenuate: a token carries at most 16 budget caveats, this one has 17"


def test_a_garbage_token_is_refused_plainly(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "inspect", "not-a-token!")
    assert code == 2 and err.startswith("agentcaps inspect: not an agentcaps token")


def test_keys_generate_and_rotate(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    code, entry, _ = run(capsys, "keys", "generate")
    assert code == 0 and len(KeyRing.parse(entry).keys) == 1
    monkeypatch.setenv("AGENTCAPS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("AGENTCAPS_MASTER_KEYS", raising=False)
    first = load_or_create_ring(tmp_path)
    code, out, _ = run(capsys, "keys", "rotate")
    ring = load_or_create_ring(tmp_path)
    assert code == 0 and list(ring.keys)[1:] == list(first.keys) and ring.signing_kid in out
    assert all(key.hex() not in out for key in ring.keys.values())
    assert stat.S_IMODE(os.stat(tmp_path / MASTER_KEYS_FILE).st_mode) == 0o600
    monkeypatch.setenv("AGENTCAPS_MASTER_KEYS", entry)
    code, _, err = run(capsys, "keys", "rotate")
    assert code == 2 and "AGENTCAPS_MASTER_KEYS is set" in err


def test_mint_verify_revoke_against_the_service(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, service_factory: object
) -> None:
    service: Service = service_factory("memory://")  # type: ignore[operator]
    monkeypatch.setenv("AGENTCAPS_URL", service.url)
    monkeypatch.setenv("AGENTCAPS_ADMIN_KEYS", ADMIN_KEY)
    code, token, _ = run(capsys, "mint", "--subject", "orchestrator", "--budget", "1 USD", "--tools", "search")
    assert code == 0
    code, out, _ = run(capsys, "verify", token, "--tool", "search", "--cost", "0.75 USD")
    assert (code, out) == (0, "allowed for orchestrator")
    code, out, _ = run(capsys, "verify", token, "--tool", "search", "--cost", "0.75 USD", "--json")
    assert code == 3 and json.loads(out)["code"] == "budget_exceeded"
    code, out, _ = run(capsys, "verify", token, "--tool", "search", "--args", "[1]")
    assert code == 2
    code, out, _ = run(capsys, "revoke", token)
    assert code == 0 and out.startswith("revoked ")
    code, out, _ = run(capsys, "verify", token, "--tool", "search")
    assert code == 3 and out.startswith("denied revoked")
    forged = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]  # another signature
    code, out, err = run(capsys, "revoke", forged)
    assert code == 2 and out == "", (code, out)
    assert err.startswith("agentcaps revoke: 403 invalid_token: ") and "{" not in err, err  # words, not raw JSON
    monkeypatch.setenv("AGENTCAPS_ADMIN_KEYS", WRONG_ADMIN_KEY)
    code, _, err = run(capsys, "mint", "--subject", "x")
    assert code == 2 and "401 unauthorized" in err


def test_an_unreachable_service_is_a_plain_failure(capsys: pytest.CaptureFixture[str], root_token: str) -> None:
    code, _, err = run(capsys, "verify", root_token, "--tool", "search", "--url", "http://127.0.0.1:9")
    assert code == 1 and "ConnectError" in err and len(err.splitlines()) == 1
