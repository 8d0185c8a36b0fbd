"""Approvals through the SDK: Client and AsyncClient list, read, approve and deny with the admin key or a
delegator's token, and `verify(..., wait=N)` waits for the decision.

The tree: the orchestrator's root hands `buyer` a token whose payments over 1.00 USD need approval.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.api.app import create_app
from app.config import Settings
from app.schemas import Allowed, ApprovalView, Denied, Money
from app.sdk import ApiError, AsyncClient, Client, Token
from app.store.memory import MemoryStore
from tests.keys import ADMIN_KEY
from tests.processes import Service

PAY = {"cost": "2.00 USD", "args": {"to": "acme"}}


@pytest.fixture
def service(service_factory: object) -> Service:
    return service_factory("memory://")  # type: ignore[operator, no-any-return]


@pytest.fixture
def tree(service: Service) -> Iterator[tuple[str, str]]:
    """(root, buyer) tokens."""
    with Client(service.url, admin_key=ADMIN_KEY) as admin:
        root = admin.mint("orchestrator", budget="10.00 USD", tools=["pay"]).token
    yield root, str(Token.parse(root).attenuate(to="buyer", approval_above="1.00 USD"))


def ask(client: Client, buyer: str) -> str:
    """Pay over the limit: the approval id the service answers with."""
    denied = client.verify(buyer, "pay", **PAY)  # type: ignore[arg-type]
    assert isinstance(denied, Denied) and denied.code == "approval_required", denied
    assert denied.approval is not None and denied.approval.state == "pending"
    return denied.approval.id


def test_the_delegator_sees_and_approves_with_its_token_and_the_call_runs_once(
    service: Service, tree: tuple[str, str]
) -> None:
    root, buyer = tree
    with Client(service.url) as agent, Client(service.url, token=Token.parse(root)) as orchestrator:
        approval_id = ask(agent, buyer)
        listed = orchestrator.approvals()
        assert [a.id for a in listed] == [approval_id] and isinstance(listed[0], ApprovalView)
        assert [a.id for a in orchestrator.approvals(state="pending")] == [approval_id]
        assert orchestrator.approvals(state="approved") == []
        one = orchestrator.approval(approval_id)
        assert (one.tool, one.args, one.cost, one.holder, one.state) == (
            "pay",
            {"to": "acme"},
            Money("2.00", "USD"),
            "buyer",
            "pending",
        )
        approved = orchestrator.approve(approval_id, reason="acme is a vendor")
        assert (approved.state, approved.reason, approved.decided_by) == (
            "approved",
            "acme is a vendor",
            "orchestrator (hop 0)",
        )
        assert orchestrator.approve(approval_id).state == "approved"  # the same decision again
        with pytest.raises(ApiError) as other:
            orchestrator.deny(approval_id)
        assert (other.value.status, other.value.code) == (409, "conflict")
        allowed = agent.verify(buyer, "pay", **PAY)  # type: ignore[arg-type]
        assert isinstance(allowed, Allowed) and allowed.charged == Money("2.00", "USD")
        assert ask(agent, buyer) != approval_id  # one approval, one call
        assert [a.id for a in orchestrator.approvals(state="used")] == [approval_id]


def test_the_buyer_itself_may_neither_see_nor_decide_its_own_approval(service: Service, tree: tuple[str, str]) -> None:
    _, buyer = tree
    with Client(service.url, token=buyer) as self_approver:
        approval_id = ask(self_approver, buyer)
        assert self_approver.approvals() == []
        for attempt in (self_approver.approval, self_approver.approve, self_approver.deny):
            with pytest.raises(ApiError) as refused:
                attempt(approval_id)
            assert refused.value.status == 404
    with Client(service.url, admin_key=ADMIN_KEY, token=buyer) as operator:  # the admin key wins over the token
        assert [a.id for a in operator.approvals()] == [approval_id]
    with Client(service.url) as nobody, pytest.raises(ApiError) as anonymous:
        nobody.approvals()
    assert anonymous.value.status == 401


def test_a_verify_that_waits_runs_once_approved_meanwhile(service: Service, tree: tuple[str, str]) -> None:
    root, buyer = tree

    def approve_when_asked() -> None:
        with Client(service.url, token=root) as orchestrator:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not (pending := orchestrator.approvals(state="pending")):
                time.sleep(0.05)
            orchestrator.approve(pending[0].id)

    approver = threading.Thread(target=approve_when_asked)
    approver.start()
    # A client timeout shorter than the wait: the wait, not the timeout, bounds the request.
    with Client(service.url, timeout=1) as agent:
        started = time.monotonic()
        decision = agent.verify(buyer, "pay", wait=15, **PAY)  # type: ignore[arg-type]
    approver.join()
    assert isinstance(decision, Allowed), decision
    assert time.monotonic() - started < 10


def test_a_denial_names_the_approvers_reason_to_the_waiting_call_and_its_retries(
    service: Service, tree: tuple[str, str]
) -> None:
    root, buyer = tree
    with Client(service.url) as agent, Client(service.url, token=root) as orchestrator:
        approval_id = ask(agent, buyer)
        denied = orchestrator.deny(approval_id, reason="acme is not a vendor")
        assert (denied.state, denied.reason) == ("denied", "acme is not a vendor")
        again = agent.verify(buyer, "pay", wait=5, **PAY)  # type: ignore[arg-type]
        assert isinstance(again, Denied) and again.code == "approval_denied"
        assert "acme is not a vendor" in again.reason and again.approval is not None
        assert (again.approval.id, again.approval.state) == (approval_id, "denied")


def test_a_reason_with_control_characters_is_refused_by_the_service(service: Service, tree: tuple[str, str]) -> None:
    root, buyer = tree
    with Client(service.url) as agent, Client(service.url, token=root) as orchestrator:
        approval_id = ask(agent, buyer)
        for reason in ("ok\nfake log line", "ok\x1b[31m", "\u2028"):
            with pytest.raises(ApiError) as refused:
                orchestrator.deny(approval_id, reason=reason)
            assert (refused.value.status, refused.value.field) == (400, "reason")
        assert orchestrator.approval(approval_id).state == "pending"


HOSTILE_IDS = ["a/b", "..", ".", "...", "?state=pending", "%2F", "x/approve", "../../tokens", "#", "x?y", " "]


@pytest.mark.parametrize("approval_id", HOSTILE_IDS)
def test_an_approval_id_is_one_path_segment_whatever_it_holds(
    service: Service, tree: tuple[str, str], approval_id: str
) -> None:
    """`approval(".")` would otherwise GET /v1/approvals/ (the list), `approve("..")` POST /v1/approve, and
    `deny(id + "/approve?")` approve: every one of them names an approval, none exists, nothing is decided.

    The service routes on the percent-decoded path (`%2F` is a `/` to its router): a GET of an id holding
    `/approve` reaches the approve route's path and is answered 405, still nothing done; approve and deny always end
    with their own action, so they are 404."""
    _, buyer = tree
    with Client(service.url) as agent, Client(service.url, admin_key=ADMIN_KEY) as operator:
        real = ask(agent, buyer)
        for crafted in (approval_id, real + "/" + approval_id, f"{real}/approve?", f"{real}/approve#", f"{real}/deny"):
            with pytest.raises(ApiError) as looked_up:
                operator.approval(crafted)
            assert looked_up.value.status in (404, 405), (crafted, looked_up.value)
            for decide in (operator.approve, operator.deny):
                with pytest.raises(ApiError) as refused:
                    decide(crafted)
                assert refused.value.status == 404, (crafted, refused.value)
        assert operator.approval(real).state == "pending"  # nothing decided it
        assert [a.id for a in operator.approvals()] == [real]


def test_the_client_refuses_an_empty_id_and_a_wait_the_service_cannot_take() -> None:
    sent: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(500))
    with Client("http://x", transport=transport, admin_key="k") as client:
        for attempt in (client.approval, client.approve, client.deny):
            with pytest.raises(ValueError, match="empty"):
                attempt("")
        for wait in (61, -1, float("nan"), float("inf")):
            with pytest.raises(ValueError, match="wait must be 0 to 60 seconds"):
                client.verify("t", "pay", wait=wait)
    assert sent == []


def test_the_bearer_of_approval_calls_is_the_admin_key_else_the_token() -> None:
    seen: list[tuple[str, str, str | None]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.raw_path.decode(), request.headers.get("authorization")))
        return httpx.Response(200, json={"approvals": []})

    transport = httpx.MockTransport(answer)
    with Client("http://x", token="tok", verifier_key="vk", transport=transport) as client:
        assert client.approvals(state="denied") == []
    with Client("http://x", token="tok", admin_key="ak", transport=transport) as client:
        client.approvals()
    assert seen == [("GET", "/v1/approvals?state=denied", "Bearer tok"), ("GET", "/v1/approvals", "Bearer ak")]


async def test_the_async_client_decides_the_same_way(tmp_path: Path) -> None:
    settings = Settings.from_env({"AGENTCAPS_DATA_DIR": str(tmp_path)})
    transport = httpx.ASGITransport(app=create_app(settings, store=MemoryStore()))
    async with AsyncClient("http://agentcaps.test", admin_key=settings.admin_keys[0], transport=transport) as admin:
        root = (await admin.mint("orchestrator", budget="10.00 USD")).token
    buyer = str(Token.parse(root).attenuate(to="buyer", approval_above="1.00 USD"))
    async with (
        AsyncClient("http://agentcaps.test", transport=transport) as agent,
        AsyncClient("http://agentcaps.test", token=root, transport=transport) as orchestrator,
    ):
        denied = await agent.verify(buyer, "pay", cost="2.00 USD")
        assert isinstance(denied, Denied) and denied.approval is not None
        assert [a.id for a in await orchestrator.approvals(state="pending")] == [denied.approval.id]
        assert (await orchestrator.approval(denied.approval.id)).holder == "buyer"
        assert (await orchestrator.approve(denied.approval.id)).state == "approved"
        assert isinstance(await agent.verify(buyer, "pay", cost="2.00 USD", wait=1), Allowed)
        again = await agent.verify(buyer, "pay", cost="2.00 USD")
        assert isinstance(again, Denied) and again.approval is not None
        assert (await orchestrator.deny(again.approval.id, reason="once is enough")).state == "denied"
        with pytest.raises(ApiError) as unknown:
            await orchestrator.approve("..")
        assert unknown.value.status == 404
