"""The clients resend a 503 by themselves: a verify with the request_id the 503 names (so a charge the store made
before the 503 is replayed, not made again), settle, release and extend as they are; with backoff, within
`retry_for` seconds, after which the 503 is an ApiError that names the request_id.

End to end, the store's reply is lost by the TCP proxy of tests/store/test_faults.py in front of the real Redis;
the clients' own rules (what is resent, with what, for how long) are checked against scripted answers.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.api.app import create_app
from app.config import Settings
from app.mcp.costs import CostTable
from app.mcp.guard import Admitted, Guard
from app.schemas import Allowed
from app.sdk import ApiError, AsyncClient, Client
from app.store.redis import RedisStore
from app.store.runner import NodeRunner
from tests.proxy import Proxy

UNAVAILABLE = {"allowed": False, "code": "store_unavailable", "reason": "the counter store is unavailable"}


@pytest.fixture
async def service(proxy: Proxy, tmp_path: Path) -> AsyncIterator[tuple[httpx.ASGITransport, str]]:
    """The app over the proxied Redis, on this test's event loop (where the proxy runs), and its admin key."""
    settings = Settings.from_env({"AGENTCAPS_DATA_DIR": str(tmp_path), "AGENTCAPS_LOCATION": "http://agentcaps.test"})
    store = RedisStore(NodeRunner(proxy.url, timeout=0.5))
    yield httpx.ASGITransport(create_app(settings, store=store)), settings.admin_keys[0]
    await store.close()


@pytest.mark.parametrize("mode", ["charge", "hold"])
async def test_a_charge_whose_answer_was_lost_is_replayed_not_charged_twice(
    proxy: Proxy, service: tuple[httpx.ASGITransport, str], mode: str
) -> None:
    transport, admin = service
    async with AsyncClient("http://agentcaps.test", admin_key=admin, transport=transport) as client:
        root = await client.mint("orchestrator", budget="10.00 USD")
        proxy.mode, proxy.then = "lose", "forward"  # the store charges, its reply is lost: the service says 503
        decision = await client.verify(root.token, "search", cost="1 USD", mode=mode)
        assert proxy.mode == "forward", "the fault did not happen"
        assert isinstance(decision, Allowed) and decision.replayed  # the charge made before the 503, replayed
        if mode == "hold":
            assert decision.hold_id is not None
            assert (await client.settle(decision.hold_id)).amount == "1.00"
        inspected = await client.inspect(root.token)
        assert inspected.budgets is not None and (inspected.budgets[0].spent, inspected.budgets[0].held) == (
            "1.00",
            "0.00",
        )


async def test_without_resends_the_503_names_the_request_id_to_resend_later(
    proxy: Proxy, service: tuple[httpx.ASGITransport, str]
) -> None:
    transport, admin = service
    async with AsyncClient("http://agentcaps.test", admin_key=admin, transport=transport, retry_for=0) as client:
        root = await client.mint("orchestrator", budget="10.00 USD")
        proxy.mode, proxy.then = "lose", "forward"
        with pytest.raises(ApiError) as unavailable:
            await client.verify(root.token, "search", cost="1 USD")
        assert (unavailable.value.status, unavailable.value.code) == (503, "store_unavailable")
        request_id = unavailable.value.request_id
        assert request_id is not None and request_id in unavailable.value.reason
        later = await client.verify(root.token, "search", cost="1 USD", request_id=request_id)
        assert isinstance(later, Allowed) and later.replayed
        inspected = await client.inspect(root.token)
        assert inspected.budgets is not None and inspected.budgets[0].spent == "1.00"


class Script:
    """A scripted service: answers in turn (the last one from then on), and every request it got."""

    def __init__(self, *answers: tuple[int, object]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status, body = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(body, bytes):
            return httpx.Response(status, content=body)
        return httpx.Response(status, json=body)

    def bodies(self) -> list[dict[str, object]]:
        return [json.loads(r.content) if r.content else {} for r in self.requests]


ALLOWED = {"allowed": True, "token_id": "t", "holder": None, "delegation": [], "budgets": []}


def test_a_verify_is_resent_with_the_request_id_its_503_names() -> None:
    script = Script((503, UNAVAILABLE | {"request_id": "agentcaps-1"}), (200, ALLOWED | {"replayed": True}))
    with Client("http://x", transport=httpx.MockTransport(script)) as client:
        decision = client.verify("tok", "search", cost="1 USD")
    assert isinstance(decision, Allowed) and decision.replayed
    first, resent = script.bodies()
    assert "request_id" not in first and resent == first | {"request_id": "agentcaps-1"}


def test_a_callers_request_id_is_kept_and_resent_even_when_a_proxy_answers_503() -> None:
    script = Script((503, b"<html>unavailable</html>"), (503, UNAVAILABLE | {"request_id": "mine"}), (200, ALLOWED))
    with Client("http://x", transport=httpx.MockTransport(script)) as client:
        assert isinstance(client.verify("tok", "search", request_id="mine"), Allowed)
    assert [b["request_id"] for b in script.bodies()] == ["mine"] * 3


def test_a_503_without_a_request_id_is_not_resent_it_could_charge_twice() -> None:
    script = Script((503, b"<html>unavailable</html>"), (200, ALLOWED))
    with Client("http://x", transport=httpx.MockTransport(script)) as client, pytest.raises(ApiError) as refused:
        client.verify("tok", "search", cost="1 USD")
    assert refused.value.status == 503 and len(script.requests) == 1


@pytest.mark.parametrize("call", ["settle", "release", "extend"])
def test_hold_calls_are_resent_as_they_are(call: str) -> None:
    hold = {"hold_id": "h", "state": "held", "currency": "USD"}
    script = Script((503, {"code": "store_unavailable", "reason": "down"}), (200, hold))
    with Client("http://x", transport=httpx.MockTransport(script)) as client:
        args = {"settle": ("h", "0.50"), "release": ("h",), "extend": ("h", 60)}[call]
        assert getattr(client, call)(*args).hold_id == "h"
    assert len(script.requests) == 2 and script.requests[0].content == script.requests[1].content


def test_other_calls_and_other_errors_are_not_resent() -> None:
    script = Script((503, {"code": "store_unavailable", "reason": "down"}))
    with Client("http://x", transport=httpx.MockTransport(script)) as client, pytest.raises(ApiError):
        client.inspect("tok")
    script = Script((500, {"code": "internal_error", "reason": "internal error", "request_id": "log-1"}))
    with Client("http://x", transport=httpx.MockTransport(script)) as client, pytest.raises(ApiError) as crashed:
        client.verify("tok", "search")
    assert crashed.value.request_id is None  # a 500's request_id is a log reference, not one to resend with
    assert len(script.requests) == 1


async def test_resends_back_off_and_stop_at_the_deadline_with_the_last_503() -> None:
    script = Script((503, UNAVAILABLE | {"request_id": "agentcaps-1"}))
    for make in ("sync", "async"):
        script.requests.clear()
        started = time.monotonic()
        if make == "sync":
            client = Client("http://x", transport=httpx.MockTransport(script), retry_for=1.5)
            with client, pytest.raises(ApiError) as gave_up:
                client.verify("tok", "search", cost="1 USD")
        else:
            async with AsyncClient("http://x", transport=httpx.MockTransport(script), retry_for=1.5) as aclient:
                with pytest.raises(ApiError) as gave_up:
                    await aclient.verify("tok", "search", cost="1 USD")
        took = time.monotonic() - started
        assert (gave_up.value.status, gave_up.value.request_id) == (503, "agentcaps-1")
        assert took <= 1.5 + 0.5, took  # never sleeps past the deadline (the margin is for a slow machine)
        # Pauses double from 0.05-0.1 s: a handful of resends in 1.5 s, not a busy loop.
        assert 3 <= len(script.requests) <= 8, len(script.requests)


async def test_the_mcp_guard_gets_the_resend_through_the_sdk(
    proxy: Proxy, service: tuple[httpx.ASGITransport, str]
) -> None:
    """A tool call whose hold the store made before a 503 is admitted with that hold, and settled once."""
    transport, admin = service
    async with AsyncClient("http://agentcaps.test", admin_key=admin, transport=transport) as client:
        root = await client.mint("orchestrator", budget="10.00 USD")
        guard = Guard(client, CostTable({"search": {"amount": "1", "currency": "USD"}}))
        proxy.mode, proxy.then = "lose", "forward"
        admitted = await guard.admit(root.token, "search", {"query": "q"})
        assert proxy.mode == "forward", "the fault did not happen"
        assert isinstance(admitted, Admitted) and admitted.hold_id is not None
        await guard.conclude(admitted, {"content": []})
        inspected = await client.inspect(root.token)
        assert inspected.budgets is not None
        assert (inspected.budgets[0].spent, inspected.budgets[0].held) == ("1.00", "0.00")
