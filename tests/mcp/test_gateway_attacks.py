"""Attacks on `agentcaps gateway` as a process, against a real service: raw JSON-RPC lines on its stdin, as a
hostile agent writes them. Each one was a way to run a tool without paying; each must now be refused or paid."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.sdk import Token
from tests.mcp.conftest import Live
from tests.mcp.slow_server import COSTS

ANSWER_TIMEOUT = 15


class RawAgent:
    """The gateway process, fed raw lines; its answers collected by id."""

    def __init__(self, live: Live, tmp_path: Path, *extra: str) -> None:
        costs = tmp_path / "slow-costs.json"
        costs.write_text(json.dumps(COSTS))
        upstream = f"{sys.executable} -m tests.mcp.slow_server"
        args = ["-m", "app.cli", "gateway", "--upstream", upstream, "--costs", str(costs), "--verifier", live.url]
        self.stderr = tmp_path / "gateway.err"
        with self.stderr.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, *args, *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err
            )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))

    def send(self, message: dict[str, Any] | str) -> None:
        assert self.process.stdin is not None
        line = message if isinstance(message, str) else json.dumps(message)
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def answers(self, id: Any, count: int = 1) -> list[dict[str, Any]]:
        """The next `count` answers to `id` (those already seen first)."""
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while sum(1 for m in self.seen if m.get("id") == id and "method" not in m) < count:
            self.seen.append(self.lines.get(timeout=max(0.01, deadline - time.monotonic())))
        found = [m for m in self.seen if m.get("id") == id and "method" not in m][:count]
        for m in found:
            self.seen.remove(m)
        return found

    def handshake(self) -> None:
        hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}
        self.send({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": hello})
        assert "result" in self.answers("init")[0]
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def close(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            return self.process.wait(20)
        finally:
            self.process.kill()
            self.reader.join(5)
            assert self.process.stdout is not None
            self.process.stdout.close()


def call(id: Any, token: str | None, amount: Any = 1, seconds: float = 0, name: str = "slowpay") -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": {"amount": amount, "seconds": seconds}}
    if token is not None:
        params["_meta"] = {"agentcaps/token": token}
    return {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}


def budget(live: Live, token: str) -> list[tuple[str, str]]:
    """(spent, held) per budget of the token, root first."""
    inspected = httpx.post(live.url + "/v1/inspect", json={"token": token}, timeout=5).json()
    return [(b["spent"], b["held"]) for b in inspected["budgets"]]


@pytest.fixture
def five(minted: Live) -> str:
    """A 5.00 USD token under the test's own 10.00 USD root."""
    return str(Token.parse(minted.root).attenuate(to="spender", budget="5.00 USD"))


@pytest.fixture
def raw(minted: Live, tmp_path: Path) -> Iterator[RawAgent]:
    agent = RawAgent(minted, tmp_path, "--hold-ttl", "2")
    agent.handshake()
    yield agent
    agent.close()


def paid(answer: dict[str, Any]) -> bool:
    return "result" in answer and not answer["result"].get("isError")


def test_a_reused_id_is_refused_and_never_concludes_the_call_in_flight(raw: RawAgent, minted: Live, five: str) -> None:
    """Before: the second message with id 7 took over the first call's entry; its hold expired unpaid."""
    raw.send(call(7, five, amount=4, seconds=0.5))
    time.sleep(0.2)  # admitted and running
    raw.send({"jsonrpc": "2.0", "id": 7, "method": "no/such/method", "params": {}})
    raw.send(call(7, None))
    first, second, third = raw.answers(7, 3)
    assert [m.get("error", {}).get("message") for m in (first, second)] == ["request id 7 is already in flight"] * 2
    assert paid(third) and budget(minted, five) == [("4.00", "0.00"), ("4.00", "0.00")]


def test_five_calls_with_one_id_run_once_and_are_charged_once(raw: RawAgent, minted: Live, five: str) -> None:
    for _ in range(5):
        raw.send(call(7, five, amount=1, seconds=0.5))
    answers = raw.answers(7, 5)
    assert sum(paid(a) for a in answers) == 1
    assert sum("already in flight" in a.get("error", {}).get("message", "") for a in answers) == 4
    assert budget(minted, five) == [("1.00", "0.00"), ("1.00", "0.00")]


def test_hostile_lines_neither_end_the_gateway_nor_free_the_call_in_flight(
    raw: RawAgent, minted: Live, five: str
) -> None:
    """Before: NaN in the arguments raised in the gateway, which released the holds of the calls in flight."""
    raw.send(call(1, five, amount=3, seconds=1))
    time.sleep(0.2)
    token = json.dumps(five)
    for n, number in enumerate(("NaN", "Infinity", "-Infinity", "1e400")):
        raw.send(
            f'{{"jsonrpc":"2.0","id":"n{n}","method":"tools/call","params":{{"name":"slowpay",'
            f'"arguments":{{"amount":1,"seconds":{number}}},"_meta":{{"agentcaps/token":{token}}}}}}}'
        )
    hostile = ["garbage", "[]", json.dumps([call(2, five)]), "[" * 5000 + "]" * 5000, '{"jsonrpc":"2.0"}', "\x00\xff"]
    for line in hostile:
        raw.send(line)
    raw.send({**call(3, five, amount=2), "id": None})  # a tools/call with no id to answer
    raw.send({k: v for k, v in call(4, five, amount=2).items() if k != "id"})  # as a notification
    raw.send({"jsonrpc": "2.0", "id": "alive", "method": "ping"})
    denied = [raw.answers(f"n{n}")[0]["result"] for n in range(4)]
    errors = raw.answers(None, len(hostile))  # each line that is not a message is answered
    assert raw.answers("alive")[0]["result"] == {}
    assert paid(raw.answers(1)[0])
    for result in denied:
        assert result["isError"] and result["content"][0]["text"].startswith(
            "agentcaps denied arg_mismatch: argument 'seconds' is not a finite number"
        )
    assert all(e["error"]["code"] == -32600 for e in errors)
    assert budget(minted, five) == [("3.00", "0.00"), ("3.00", "0.00")]  # the call in flight, and nothing else
    assert raw.close() == 0


def test_a_call_cancelled_while_it_runs_is_charged_and_its_late_answer_dropped(
    raw: RawAgent, minted: Live, five: str
) -> None:
    """Before: slowpay, then notifications/cancelled 150 ms later: the tool paid, the budget read 0.00 spent."""
    raw.send(call(1, five, amount=4, seconds=0.6))
    time.sleep(0.15)
    raw.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}})
    time.sleep(1)  # the tool finishes meanwhile
    raw.send({"jsonrpc": "2.0", "id": "alive", "method": "ping"})
    raw.answers("alive")
    assert not any(m.get("id") == 1 for m in raw.seen)  # its late answer never reached the agent
    assert budget(minted, five) == [("4.00", "0.00"), ("4.00", "0.00")]


def test_every_result_delivered_is_charged_when_cancels_race_the_answers(
    raw: RawAgent, minted: Live, five: str
) -> None:
    """Before: a cancel arriving with the answer released the hold, and the answer still went out (52 of 49)."""
    for n in range(30):  # cancels from before the tool starts to after it answered
        raw.send(call(n, five, amount="0.1", seconds=0.05))
        time.sleep(0.015 * (n % 8))
        raw.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": n}})
    raw.send({"jsonrpc": "2.0", "id": "alive", "method": "ping"})
    raw.answers("alive")
    time.sleep(0.5)
    while not raw.lines.empty():
        raw.seen.append(raw.lines.get())
    delivered = sum(1 for m in raw.seen if isinstance(m.get("id"), int) and paid(m))
    spent = budget(minted, five)[1][0]
    assert float(spent) >= delivered * 0.1 - 1e-9, (spent, delivered)


def test_a_call_that_outlives_its_hold_keeps_it_and_is_charged(raw: RawAgent, minted: Live, five: str) -> None:
    """--hold-ttl 2 and a tool that runs 3.5 s: the gateway extends the hold, which is still held after 2.5 s."""
    raw.send(call(1, five, amount=4, seconds=3.5))
    time.sleep(2.5)
    held = budget(minted, five)
    assert paid(raw.answers(1)[0])
    assert held == [("0.00", "4.00"), ("0.00", "4.00")]
    assert budget(minted, five) == [("4.00", "0.00"), ("4.00", "0.00")]


def test_the_upstream_gets_no_agentcaps_variable(minted: Live, tmp_path: Path) -> None:
    secrets = {"AGENTCAPS_ADMIN_KEYS": "ak_" + "a" * 40, "AGENTCAPS_MASTER_KEYS": "k1:" + "m" * 43, "OTHER": "on"}
    env_before = dict(os.environ)
    os.environ.update(secrets)
    try:
        agent = RawAgent(minted, tmp_path, "--token", minted.root)
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    agent.handshake()
    for name in secrets:
        agent.send(call(name, None, name="env") | {"params": {"name": "env", "arguments": {"name": name}}})
    seen = {name: agent.answers(name)[0]["result"]["content"][0]["text"] for name in secrets}
    agent.close()
    assert seen == {"AGENTCAPS_ADMIN_KEYS": "(unset)", "AGENTCAPS_MASTER_KEYS": "(unset)", "OTHER": "on"}


def test_the_gateway_process_is_not_dumpable() -> None:
    """So a process of the same user (the upstream) cannot read its memory or /proc/PID/environ."""
    code = (
        "import ctypes, sys\n"
        "from app.mcp.gateway import main\n"
        "main(['--upstream', ''])\n"  # a usage error: the gateway stops right after protecting itself
        "print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))\n"  # PR_GET_DUMPABLE
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "0"


@pytest.mark.parametrize("stdin", ["devnull", "closed"])
def test_a_closed_or_unreadable_stdin_is_the_agent_hanging_up(minted: Live, tmp_path: Path, stdin: str) -> None:
    """Before: `agentcaps gateway ... </dev/null` printed an ExceptionGroup traceback and exited 1."""
    args = ["-m", "app.cli", "gateway", "--upstream", f"{sys.executable} -m tests.mcp.slow_server"]
    command = [sys.executable, *args, "--verifier", minted.url]
    if stdin == "devnull":
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    else:
        done = subprocess.run(["sh", "-c", 'exec "$@" <&-', "sh", *command], capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stderr) == (0, "")


def test_no_request_passes_without_a_token(raw: RawAgent, minted: Live) -> None:
    """Before: every method but tools/* reached the upstream with no token at all."""
    requests = {
        "read": ("resources/read", {"uri": "secrets://plan"}),
        "prompt": ("prompts/get", {"name": "review", "arguments": {"code": "x"}}),
        "complete": ("completion/complete", {"ref": {"type": "ref/prompt", "name": "review"}, "argument": {}}),
        "unknown": ("no/such/method", {}),
        "task": ("tasks/get", {"taskId": "t1"}),
    }
    for id, (method, params) in requests.items():
        raw.send({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
    raw.send({"jsonrpc": "2.0", "id": "list", "method": "resources/list", "params": {}})
    for id in requests:
        assert raw.answers(id)[0]["error"]["message"].startswith("agentcaps denied invalid_token:"), id
    assert raw.answers("list")[0]["result"]["resources"] == []
    raw.send(
        {
            "jsonrpc": "2.0",
            "id": "ok",
            "method": "resources/read",
            "params": {**requests["read"][1], "_meta": {"agentcaps/token": minted.root}},
        }
    )
    assert raw.answers("ok")[0]["result"]["contents"][0]["text"] == "the plan"  # the root allows every tool
