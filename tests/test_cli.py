"""The agentcaps CLI, in-process: offline attenuate/inspect, keys, and mint/verify/revoke against a service."""

from __future__ import annotations

import json
import os
import queue
import re
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from app.cli import COMMANDS, main, parser
from app.config import MASTER_KEYS_FILE, load_or_create_ring
from app.sdk import Client
from app.token.keys import KeyRing
from app.token.mint import mint
from tests.keys import ADMIN_KEY, WRONG_ADMIN_KEY
from tests.processes import Service, free_port, wait_until


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


def test_attenuate_adds_approval_caveats_and_inspect_shows_them(
    capsys: pytest.CaptureFixture[str], root_token: str
) -> None:
    argv = ["--to", "buyer", "--approval-tools", "pay,wire.*", "--approval-above", " 1.00 USD ", "--json"]
    code, out, err = run(capsys, "attenuate", root_token, *argv)
    assert code == 0, err
    child = json.loads(out)
    assert child["caveats"][-3:] == ["delegate = buyer", "approval in pay,wire.*", "approval > 1.00 USD"]
    code, tree, _ = run(capsys, "inspect", child["token"])
    assert code == 0  # waiting for an approval is not a denial
    assert "    approval in pay,wire.*" in tree and "    approval > 1.00 USD" in tree
    code, out, _ = run(capsys, "inspect", child["token"], "--json")
    view = json.loads(out)
    assert view["denies"] is None
    assert view["limits"]["approvals"] == ["approval in pay,wire.*", "approval > 1.00 USD"]


def test_mint_takes_approval_caveats_only_as_raw_caveats() -> None:
    # The mint request has no approval field (docs/api.md): the flags belong to attenuate alone.
    with pytest.raises(SystemExit):
        parser().parse_args(["mint", "--subject", "o", "--approval-tools", "pay"])
    args = parser().parse_args(["mint", "--subject", "o", "--caveat", "approval in pay"])
    assert args.caveat == ["approval in pay"]


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
        (["--arg", "amount"], "--arg must look like 'amount<=3'"),
        (["--arg", "amount<=three"], "args.amount"),
        (["--budget", "ten USD"], '--budget must look like "10.00 USD"'),
        (["--budget", "10"], '--budget must look like "10.00 USD"'),
        (["--cost-cap", "0.05"], '--cost-cap must look like "0.50 USD"'),
        (["--expires-at", "yesterday"], "expires_at"),
        (["--approval-above", "1.00"], '--approval-above must look like "1.00 USD"'),
        (["--approval-above", "1.00 usd"], '--approval-above must look like "1.00 USD"'),
        (["--approval-above", "-1 USD"], '--approval-above must look like "1.00 USD"'),
        (["--approval-tools", "*"], "approval_tools: approval tools must be comma-separated names"),
        (["--approval-tools", "pay wire"], "approval_tools: "),
        (["--approval-tools", ","], "approval_tools: give at least one name"),
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


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, service_factory: object) -> Service:
    """A memory:// service that the CLI reaches by AGENTCAPS_URL, with the admin key in the environment."""
    service: Service = service_factory("memory://")  # type: ignore[operator]
    monkeypatch.setenv("AGENTCAPS_URL", service.url)
    monkeypatch.setenv("AGENTCAPS_ADMIN_KEYS", ADMIN_KEY)
    return service


def test_mint_verify_revoke_against_the_service(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, served: Service
) -> None:
    code, token, _ = run(capsys, "mint", "--subject", "orchestrator", "--budget", "1 USD", "--tools", "search")
    assert code == 0
    code, out, _ = run(capsys, "verify", token, "--tool", "search", "--cost", "0.75 USD")
    assert (code, out) == (
        0,
        "allowed for orchestrator: charged 0.75 USD; remaining: hop 0 (orchestrator) 0.25 of 1.00 USD",
    )
    code, out, _ = run(capsys, "verify", token, "--tool", "search", "--cost", "0.05 USD", "--hold")
    assert code == 0 and out.startswith("allowed for orchestrator: held 0.05 USD; hold ")
    assert out.endswith("remaining: hop 0 (orchestrator) 0.20 of 1.00 USD")
    code, out, _ = run(capsys, "verify", token, "--tool", "search", "--cost", "0.75 USD", "--json")
    assert code == 3 and json.loads(out)["code"] == "budget_exceeded"
    code, out, _ = run(capsys, "verify", token, "--tool", "search", "--args", "[1]")
    assert code == 2
    child = run(capsys, "attenuate", token, "--to", "researcher")[1]
    code, out, _ = run(capsys, "revoke", child)
    assert code == 0
    assert out == (
        "revoked the token held by researcher (orchestrator > researcher) and every token derived from it; "
        "its ancestors and siblings still work"
    )
    code, out, _ = run(capsys, "verify", token, "--tool", "search")
    assert code == 0, out  # the root was not revoked with its child
    code, out, _ = run(capsys, "revoke", token)
    assert code == 0 and out.startswith("revoked the token held by orchestrator (orchestrator) ")
    code, out, _ = run(capsys, "verify", token, "--tool", "search")
    assert code == 3 and out.startswith("denied revoked")
    forged = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]  # another signature
    code, out, err = run(capsys, "revoke", forged)
    assert code == 2 and out == "", (code, out)
    assert err.startswith("agentcaps revoke: 403 invalid_token: ") and "{" not in err, err  # words, not raw JSON
    monkeypatch.setenv("AGENTCAPS_ADMIN_KEYS", WRONG_ADMIN_KEY)
    code, _, err = run(capsys, "mint", "--subject", "x")
    assert code == 2 and "401 unauthorized: the admin key presented was rejected" in err


def test_an_unreachable_service_is_a_plain_failure_that_names_the_url_and_the_fix(
    capsys: pytest.CaptureFixture[str], root_token: str
) -> None:
    code, _, err = run(capsys, "verify", root_token, "--tool", "search", "--url", "http://127.0.0.1:9")
    assert code == 1 and len(err.splitlines()) == 1
    assert "cannot reach the agentcaps service at http://127.0.0.1:9" in err
    assert "agentcaps serve" in err and "--url" in err


def test_bad_amounts_are_named_before_any_network_call(capsys: pytest.CaptureFixture[str], root_token: str) -> None:
    # The service is down: the user still learns about the typo first, not about the connection.
    down = ["--url", "http://127.0.0.1:9"]
    code, _, err = run(capsys, "verify", root_token, "--tool", "search", "--cost", "0.05", *down)
    assert code == 2 and '--cost must look like "0.05 USD"' in err
    code, _, err = run(capsys, "mint", "--subject", "o", "--budget", "ten USD", "--admin-key", "k" * 32, *down)
    assert code == 2 and '--budget must look like "10.00 USD"' in err


@pytest.mark.parametrize(
    ("flag", "caveat"),
    [
        ("amount<=3", "arg.amount <= 3"),
        ("amount <= 3", "arg.amount <= 3"),
        ("amount=<= 3", "arg.amount <= 3"),
        ("currency in usd,eur", "arg.currency in usd,eur"),
        ("payee.iban!=DE00", "arg.payee.iban != DE00"),
        ("pin in 1,2", "arg.pin in 1,2"),
    ],
)
def test_arg_conditions_read_as_people_write_them(
    capsys: pytest.CaptureFixture[str], root_token: str, flag: str, caveat: str
) -> None:
    code, out, err = run(capsys, "attenuate", root_token, "--arg", flag, "--json")
    assert code == 0, err
    assert json.loads(out)["caveats"][-1] == caveat


def test_inspect_says_when_a_token_denies_every_call(capsys: pytest.CaptureFixture[str]) -> None:
    expired, _ = mint(load_ring(), "http://agentcaps.test", ["delegate = o", "expires < 2020-01-01T00:00:00Z"])
    code, out, _ = run(capsys, "inspect", expired)
    assert code == 3 and out.splitlines()[-1] == "DENIES EVERY CALL: expired at 2020-01-01T00:00:00Z"
    broken, _ = mint(load_ring(), "http://agentcaps.test", ["delegate = o", "colour = blue"])
    code, out, _ = run(capsys, "inspect", broken, "--json")
    assert code == 3 and json.loads(out)["denies"].startswith("unknown_caveat: ")


def test_inspect_of_a_usable_token_exits_0(capsys: pytest.CaptureFixture[str], root_token: str) -> None:
    code, out, _ = run(capsys, "inspect", root_token, "--json")
    assert code == 0 and json.loads(out)["denies"] is None


def test_attenuate_says_when_the_parent_expires_sooner_than_asked(capsys: pytest.CaptureFixture[str]) -> None:
    soon, _ = mint(load_ring(), "http://agentcaps.test", ["delegate = o", "expires < 2999-01-01T00:00:00Z"])
    code, _, err = run(capsys, "attenuate", soon, "--to", "r", "--expires-at", "3000-01-01T00:00:00Z")
    assert code == 0
    assert err == "note: the token expires at 2999-01-01T00:00:00Z, its parent's expiry, sooner than asked"
    code, _, err = run(capsys, "attenuate", soon, "--to", "r", "--expires-in", "60")
    assert code == 0 and err == ""


def test_minting_an_unbounded_token_warns(capsys: pytest.CaptureFixture[str], served: Service) -> None:
    code, _, err = run(capsys, "mint", "--subject", "o")
    assert code == 0 and err.startswith("warning: this token has no budget and never expires")
    code, _, err = run(capsys, "mint", "--subject", "o", "--expires-in", "60")
    assert code == 0 and err == ""


def test_help_lists_every_command_and_explains_every_verify_flag() -> None:
    top = parser().format_help()
    assert all(name in top for name in [*COMMANDS, "gateway"])
    verify = subprocess.run(
        [sys.executable, "-m", "app.cli", "verify", "--help"], capture_output=True, text=True, check=True
    ).stdout
    flags = re.findall(r"^  (--[a-z-]+)( [A-Z_]+)?\n?\s*(.*)$", verify, flags=re.MULTILINE)
    assert {f for f, _, _ in flags} >= {
        "--tool",
        "--cost",
        "--audience",
        "--request-id",
        "--hold-ttl",
        "--verifier-key",
    }
    assert all(text.strip() for _, _, text in flags), flags


def test_holds_are_settled_released_and_extended_from_the_cli(
    capsys: pytest.CaptureFixture[str], served: Service
) -> None:
    token = run(capsys, "mint", "--subject", "o", "--budget", "1.00 USD", "--expires-in", "600")[1]

    def hold() -> str:
        code, out, _ = run(capsys, "verify", token, "--tool", "t", "--cost", "0.40 USD", "--hold", "--json")
        assert code == 0
        hold_id: str = json.loads(out)["hold_id"]
        return hold_id

    first, second = hold(), hold()
    code, out, _ = run(capsys, "extend", first, "600")
    assert code == 0 and out.startswith(f"hold {first} held 0.40 USD until ")
    code, out, _ = run(capsys, "settle", first, "0.25")
    assert (code, out) == (0, f"hold {first} settled 0.25 USD")
    code, out, _ = run(capsys, "release", second)
    assert (code, out) == (0, f"hold {second} released")
    code, out, _ = run(capsys, "verify", token, "--tool", "t", "--json")
    assert [b["spent"] for b in json.loads(out)["budgets"]] == ["0.25"]  # what was settled, nothing else
    code, _, err = run(capsys, "release", first)  # settled: it cannot be released any more
    assert code == 2 and "409" in err
    code, _, err = run(capsys, "settle", second, "ten")
    assert code == 2 and "AMOUNT must be a decimal like 0.05" in err
    code, _, err = run(capsys, "extend", second, "0")
    assert code == 2 and "TTL must be 1 to 86400 seconds" in err


def test_approvals_are_listed_approved_and_denied_from_the_cli(
    capsys: pytest.CaptureFixture[str], served: Service
) -> None:
    root = run(capsys, "mint", "--subject", "orchestrator", "--budget", "10 USD", "--expires-in", "600")[1]
    buyer = run(capsys, "attenuate", root, "--to", "buyer", "--approval-above", "1.00 USD")[1]
    pay = ("verify", buyer, "--tool", "pay", "--cost", "2.00 USD", "--args", '{"to": "acme"}')

    def ask() -> str:
        code, out, _ = run(capsys, *pay, "--json")
        assert code == 3 and json.loads(out)["code"] == "approval_required"
        approval_id: str = json.loads(out)["approval"]["id"]
        return approval_id

    first = ask()
    code, out, _ = run(capsys, *pay)
    assert code == 3 and out.startswith("denied approval_required: ")
    assert out.endswith(
        f"\nto run it: agentcaps approve {first} --token DELEGATOR_TOKEN (or with the admin key), "
        "then this same verify again"
    )
    code, out, _ = run(capsys, "approvals", "--token", root, "--state", "denied")
    assert (code, out) == (0, "no denied approvals")
    code, out, _ = run(capsys, "approvals", "--token", root, "--state", "pending")
    assert code == 0
    assert out.startswith(f'{first} pending: pay {{"to": "acme"}} costing 2.00 USD by buyer (orchestrator > buyer)')
    code, out, _ = run(capsys, "approvals", "--token", buyer)  # the buyer may not decide its own calls
    assert (code, out) == (0, "no approvals")
    code, out, _ = run(capsys, "approve", first, "--token", root, "--reason", "acme is a vendor", "--json")
    assert code == 0 and json.loads(out)["state"] == "approved"
    assert json.loads(out)["decided_by"] == "orchestrator (hop 0)"
    code, out, _ = run(capsys, *pay, "--wait", "2")
    assert code == 0 and out.startswith("allowed for buyer: charged 2.00 USD")
    second = ask()
    code, out, _ = run(capsys, "deny", second, "--reason", "one payment is enough")  # with the admin key
    assert code == 0 and out.startswith(f"{second} denied: pay ") and "(one payment is enough)" in out
    code, out, _ = run(capsys, *pay)
    assert code == 3 and out.startswith("denied approval_denied: ") and "one payment is enough" in out
    code, out, _ = run(capsys, "approvals", "--json")
    states = {a["id"]: a["state"] for a in json.loads(out)["approvals"]}
    assert states == {first: "used", second: "denied"}
    code, _, err = run(capsys, "approve", second, "--token", root)  # decided the other way already
    assert code == 2 and err.startswith("agentcaps approve: 409 conflict: ")


def test_approval_commands_refuse_hostile_input_in_plain_words(
    capsys: pytest.CaptureFixture[str], served: Service
) -> None:
    root = run(capsys, "mint", "--subject", "orchestrator", "--budget", "10 USD", "--expires-in", "600")[1]
    buyer = run(capsys, "attenuate", root, "--to", "buyer", "--approval-tools", "pay")[1]
    code, out, _ = run(capsys, "verify", buyer, "--tool", "pay", "--json")
    approval_id = json.loads(out)["approval"]["id"]
    code, _, err = run(capsys, "deny", approval_id, "--reason", "no\nforged log line")
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("agentcaps deny: 400 bad_request: ") and "(field reason)" in err
    for crafted in ("..", ".", f"{approval_id}/approve", "?state=pending", "%2F"):
        code, _, err = run(capsys, "deny", crafted)
        assert code == 2 and err.startswith("agentcaps deny: 404 "), (crafted, err)
    code, out, _ = run(capsys, "approvals", "--json")
    assert [a["state"] for a in json.loads(out)["approvals"]] == ["pending"]  # nothing decided it
    for wait in ("61", "nan", "inf", "-1"):
        code, _, err = run(capsys, "verify", buyer, "--tool", "pay", "--wait", wait)
        assert (code, err) == (2, f"agentcaps verify: --wait must be 0 to 60 seconds, got {float(wait)}")
    code, _, err = run(capsys, "approvals", "--admin-key", ADMIN_KEY, "--token", root)
    assert code == 2 and "not both" in err
    code, _, err = run(capsys, "approvals", "--admin-key", WRONG_ADMIN_KEY)
    assert code == 2 and err.startswith("agentcaps approvals: 401 ")


def test_an_empty_id_is_bad_input_never_sent(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["approve", "", "--admin-key", ADMIN_KEY], ["release", ""]):
        code, _, err = run(capsys, *argv, "--url", "http://127.0.0.1:9")  # nothing listens: nothing is sent
        assert code == 2 and err.endswith(": an id cannot be empty"), err


# -- audit ------------------------------------------------------------------------------------------------
def audit_lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if line]


@pytest.fixture
def audited(capsys: pytest.CaptureFixture[str], served: Service) -> tuple[Service, str, str, str]:
    """A service with a root (orchestrator) and two children (a, b), each of which made a call: (service, root,
    a, b)."""
    root = run(capsys, "mint", "--subject", "orchestrator", "--budget", "1 USD", "--expires-in", "600")[1]
    a = run(capsys, "attenuate", root, "--to", "a")[1]
    b = run(capsys, "attenuate", root, "--to", "b")[1]
    assert run(capsys, "verify", a, "--tool", "search")[0] == 0
    assert run(capsys, "verify", b, "--tool", "pay", "--cost", "5 USD")[0] == 3
    return served, root, a, b


def test_audit_prints_one_page_oldest_first_as_json_lines(
    capsys: pytest.CaptureFixture[str], audited: tuple[Service, str, str, str]
) -> None:
    code, out, err = run(capsys, "audit")
    events = audit_lines(out)
    assert (code, err) == (0, "")
    assert [(e["kind"], e.get("holder"), e.get("allowed")) for e in events] == [
        ("mint", "orchestrator", None),
        ("verify", "a", True),
        ("verify", "b", False),
    ]
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)  # type: ignore[type-var]
    code, out, _ = run(capsys, "audit", "--allowed", "false", "--tool", "pay", "--kind", "verify")
    assert [e["code"] for e in audit_lines(out)] == ["budget_exceeded"]
    code, out, err = run(capsys, "audit", "--limit", "2")
    assert [e["holder"] for e in audit_lines(out)] == ["a", "b"]  # the newest two, still oldest first
    assert err.startswith("agentcaps audit: older events than these remain")
    code, out, _ = run(capsys, "audit", "--since", "2999-01-01T00:00:00Z")
    assert (code, out) == (0, "")


def test_audit_with_a_cursor_file_prints_each_event_once_across_runs(
    capsys: pytest.CaptureFixture[str], audited: tuple[Service, str, str, str], tmp_path: Path
) -> None:
    _, _, a, _ = audited
    cursor = tmp_path / "cursor"
    code, first, _ = run(capsys, "audit", "--cursor-file", str(cursor))
    assert code == 0 and len(audit_lines(first)) == 3  # no file yet: every event still kept
    assert cursor.read_text().strip() == audit_lines(first)[-1]["id"]
    for _ in range(2):
        assert run(capsys, "verify", a, "--tool", "search")[0] == 0
    code, second, _ = run(capsys, "audit", "--cursor-file", str(cursor))
    assert code == 0 and [e["holder"] for e in audit_lines(second)] == ["a", "a"]
    code, third, _ = run(capsys, "audit", "--cursor-file", str(cursor))
    assert (code, third) == (0, "")  # nothing new: nothing printed
    shipped = [e["id"] for e in audit_lines(first) + audit_lines(second)]
    page = [e["id"] for e in audit_lines(run(capsys, "audit")[1])]
    assert shipped == page  # every event, once, in order
    assert cursor.read_text().strip() == page[-1]
    assert [p.name for p in tmp_path.iterdir()] == ["cursor"]  # no temporary file left behind


@pytest.mark.parametrize("garbage", ["not an id!", "junk", "1\n2", "x" * 200])
def test_a_cursor_file_that_holds_no_event_id_is_an_error_naming_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, garbage: str
) -> None:
    # Resending everything or skipping to now would both be silent; the operator decides. Nothing is sent.
    cursor = tmp_path / "cursor"
    cursor.write_text(garbage)
    code, out, err = run(capsys, "audit", "--cursor-file", str(cursor), "--admin-key", ADMIN_KEY, "--url", DOWN)
    assert (code, out) == (2, "")
    assert err.startswith(f"agentcaps audit: --cursor-file {cursor} does not hold an event id")
    assert cursor.read_text() == garbage


DOWN = "http://127.0.0.1:9"  # nothing listens: a refusal there was made before anything was sent
ONE_PAGE = "picks one page: it does not go with --follow or --cursor-file"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--allowed", "maybe"], "--allowed must be true or false, got 'maybe'"),
        (["--limit", "0"], "--limit must be 1 to 1000, got 0"),
        (["--limit", "1001"], "--limit must be 1 to 1000, got 1001"),
        (["--follow", "--limit", "5"], f"--limit {ONE_PAGE}"),
        (["--cursor-file", "c", "--since", "2026-01-01T00:00:00Z"], f"--since {ONE_PAGE}"),
        (["--token", "t"], "give --admin-key or --token, not both"),
    ],
)
def test_audit_refuses_bad_flags_before_sending_anything(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, "audit", *argv, "--admin-key", ADMIN_KEY, "--url", DOWN)
    assert (code, out) == (2, "")
    assert err == f"agentcaps audit: {message}"


def test_the_service_names_a_bad_filter(
    capsys: pytest.CaptureFixture[str], audited: tuple[Service, str, str, str]
) -> None:
    code, _, err = run(capsys, "audit", "--token-id", "xyz")
    assert code == 2 and err.startswith("agentcaps audit: 400 bad_request: ") and "token_id" in err
    code, _, err = run(capsys, "audit", "--token-id", "xyz", "--follow")  # the stream's refusal: never retried
    assert code == 2 and err.startswith("agentcaps audit: 400 bad_request: ") and "token_id" in err


def test_audit_follow_prints_live_events(audited: tuple[Service, str, str, str]) -> None:
    service, _, a, _ = audited
    env = {**os.environ, "AGENTCAPS_URL": service.url, "AGENTCAPS_ADMIN_KEYS": ADMIN_KEY}
    follower = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "audit", "--follow", "--tool", "fetch"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(follower.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        deadline = time.monotonic() + 20
        while reader.is_alive() and time.monotonic() < deadline:  # the follower may not be connected yet
            with Client(service.url) as client:
                client.verify(a, "fetch")
            reader.join(0.5)
        assert lines and lines[0], "no live event within 20 s"
        event = json.loads(lines[0])
        assert (event["kind"], event["tool"], event["holder"]) == ("verify", "fetch", "a")
    finally:
        follower.terminate()
        _, err = follower.communicate(timeout=10)
    assert follower.returncode == 0, err  # SIGTERM is a clean stop


def test_a_token_reads_only_its_own_subtree_through_the_cli(
    capsys: pytest.CaptureFixture[str], audited: tuple[Service, str, str, str], tmp_path: Path
) -> None:
    _, root, a, b = audited
    root_id = json.loads(run(capsys, "inspect", root, "--json")[1])["token_id"]
    other = run(capsys, "mint", "--subject", "elsewhere", "--expires-in", "600")[1]
    for argv in ([], ["--cursor-file", str(tmp_path / "a-cursor")]):
        code, out, _ = run(capsys, "audit", "--token", a, *argv)
        assert code == 0 and [e["holder"] for e in audit_lines(out)] == ["a"], argv
    code, out, _ = run(capsys, "audit", "--token", b, "--allowed", "true")
    assert (code, out) == (0, "")  # b's only call was denied; a's allowed one is not b's to see
    code, out, _ = run(capsys, "audit", "--token", other, "--token-id", root_id)
    assert (code, out) == (0, "")  # another root's token asks for this root by id: nothing
    code, out, _ = run(capsys, "audit", "--token", a[:-4] + ("AAAA" if not a.endswith("AAAA") else "BBBB"))
    assert code == 2 and out == ""


def test_revoke_one_chain_seen_in_the_log(
    capsys: pytest.CaptureFixture[str], audited: tuple[Service, str, str, str]
) -> None:
    _, root, a, b = audited
    seen = next(e for e in audit_lines(run(capsys, "audit", "--token", a)[1]))
    code, out, err = run(capsys, "revoke", "--token-id", str(seen["token_id"]), "--chain", str(seen["chain"]))
    assert code == 0, err
    assert out == f"revoked chain {seen['chain']} of root {seen['token_id']} and every token derived from it"
    assert run(capsys, "verify", a, "--tool", "search")[1].startswith("denied revoked")
    assert run(capsys, "verify", b, "--tool", "search")[0] == 0  # its sibling still works
    assert run(capsys, "verify", root, "--tool", "search")[0] == 0
    code, _, err = run(capsys, "revoke", "--chain", str(seen["chain"]))
    assert code == 2 and "--chain names a chain under a root: give its root's --token-id too" in err


def test_audit_follow_reconnects_after_the_last_event_when_the_service_restarts(tmp_path: Path) -> None:
    """local:// keeps the log across a restart: the follower, cut off by a crash, picks up after what it printed."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "AGENTCAPS_STORE": "local://",
        "AGENTCAPS_DATA_DIR": str(tmp_path / "data"),
        "AGENTCAPS_PORT": str(port),
        "AGENTCAPS_ADMIN_KEYS": ADMIN_KEY,
        "AGENTCAPS_LOG_LEVEL": "ERROR",
        "AGENTCAPS_URL": url,
    }

    def serve() -> subprocess.Popen[bytes]:
        process = subprocess.Popen([sys.executable, "-m", "app.cli", "serve"], env=env, stdout=subprocess.DEVNULL)
        wait_until(lambda: httpx.get(url + "/healthz", timeout=1).status_code == 200, what="the service")
        return process

    service = serve()
    cursor = tmp_path / "cursor"
    follower = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "audit", "--follow", "--cursor-file", str(cursor)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    printed: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in follower.stdout or ():
            printed.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        with Client(url, admin_key=ADMIN_KEY) as admin:
            token = admin.mint("orchestrator", expires_in=600).token
            admin.verify(token, "before")
        assert [json.loads(printed.get(timeout=20))["kind"] for _ in range(2)] == ["mint", "verify"]
        service.kill()  # a crash: the stream is cut, not ended
        service.wait(10)
        service = serve()
        with Client(url) as client:
            client.verify(token, "after")
        event = json.loads(printed.get(timeout=30))
        assert event["tool"] == "after"  # nothing again, nothing skipped
        # Saved once the service says the backlog is sent, just after the event.
        wait_until(lambda: cursor.read_text().strip() == event["id"], 10, "the cursor to be saved")
    finally:
        follower.terminate()
        _, err = follower.communicate(timeout=10)
        service.terminate()
        service.wait(10)
    assert "reconnecting in 1 s after " in err, err
    assert printed.empty()
