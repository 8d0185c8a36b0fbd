"""Client and AsyncClient against the service: the same calls, the same answers, denials as values."""

from __future__ import annotations

import inspect
from pathlib import Path

import httpx
import msgspec
import pytest

from app.api.app import create_app
from app.config import Settings
from app.schemas import Allowed, Denied, HoldResponse
from app.sdk import ApiError, AsyncClient, Client, Token
from app.sdk.client import _Builder
from app.store.memory import MemoryStore
from tests.keys import ADMIN_KEY
from tests.processes import Service


@pytest.mark.parametrize("client", [Client, AsyncClient])
def test_each_client_method_takes_exactly_the_parameters_of_its_request_builder(client: type) -> None:
    """Before: mint and verify took `**kw`, hiding their parameters from users and type checkers."""
    calls = [name for name in vars(_Builder) if not name.startswith("_")]
    assert calls == [
        "mint",
        "verify",
        "settle",
        "release",
        "extend",
        "revoke",
        "inspect",
        "approvals",
        "approval",
        "approve",
        "deny",
        "audit",
    ]
    for name in calls:
        method, build = getattr(client, name), getattr(_Builder, name)
        self, *params = inspect.signature(method).parameters.values()
        assert self.name == "self"
        assert params == list(inspect.signature(build).parameters.values()), name
        assert inspect.iscoroutinefunction(method) == (client is AsyncClient), name
        assert (method.__name__, method.__doc__) == (name, build.__doc__)


def test_the_spec_walkthrough_with_the_sync_client(service_factory: object) -> None:
    service: Service = service_factory("memory://")  # type: ignore[operator]
    with Client(service.url, admin_key=ADMIN_KEY) as admin:
        root = admin.mint(
            subject="orchestrator", budget="10.00 USD", tools=["search", "pay"], expires_in=3600, max_depth=2
        )
    assert root.expires_at is not None and root.caveats[0] == "delegate = orchestrator"
    child = Token.parse(root.token).attenuate(
        to="researcher", budget="2.00 USD", tools=["search"], expires_in=600, max_depth=0
    )
    with Client(service.url) as client:
        decision = client.verify(str(child), tool="search", cost="0.05 USD")
        assert isinstance(decision, Allowed)
        assert decision.holder == "researcher" and [b.remaining for b in decision.budgets] == ["9.95", "1.95"]
        denied = client.verify(str(child), tool="pay", cost="0.05 USD")
        assert isinstance(denied, Denied) and denied.code == "tool_not_allowed" and denied.hop == 1
        held = client.verify(str(child), tool="search", cost="1 USD", mode="hold", hold_ttl=60)
        assert isinstance(held, Allowed) and held.hold_id
        assert client.settle(held.hold_id, "0.25").amount == "0.25"
        assert client.inspect(str(child)).budgets[1].spent == "0.30"  # type: ignore[index]
        assert client.revoke(str(child)).token_id == root.token_id
        revoked = client.verify(str(child), tool="search")
        assert isinstance(revoked, Denied) and revoked.code == "revoked"
        with pytest.raises(ApiError) as refused:
            client.release(held.hold_id)  # settled already
        assert refused.value.status == 409 and refused.value.code == "conflict"
        with pytest.raises(ApiError) as bad:
            client.verify(str(child), tool="search", cost="1.0000001 USD")
        assert bad.value.status == 400 and bad.value.field == "cost.amount"
    with Client(service.url) as anonymous, pytest.raises(ApiError) as no_key:
        anonymous.mint(subject="x")
    assert no_key.value.status == 401


async def test_the_async_client_gives_the_same_answers(tmp_path: Path) -> None:
    settings = Settings.from_env({"AGENTCAPS_DATA_DIR": str(tmp_path)})
    transport = httpx.ASGITransport(app=create_app(settings, store=MemoryStore()))
    async with AsyncClient("http://agentcaps.test", admin_key=settings.admin_keys[0], transport=transport) as c:
        root = await c.mint("orchestrator", budget="1.00 USD", rate="5/1m")
        first = await c.verify(root.token, "search", cost="0.60 USD", request_id="r1")
        again = await c.verify(root.token, "search", cost="0.60 USD", request_id="r1")
        assert isinstance(first, Allowed) and isinstance(again, Allowed)
        assert (first.replayed, again.replayed) == (False, True)  # the retry is the first answer, marked
        assert msgspec.structs.replace(again, replayed=False) == first
        over = await c.verify(root.token, "search", cost="0.60 USD")
        assert isinstance(over, Denied) and over.code == "budget_exceeded"
        assert over.budgets is not None and over.budgets[0].remaining == "0.40"
        with pytest.raises(ApiError) as conflict:
            await c.verify(root.token, "fetch", cost="0.60 USD", request_id="r1")
        assert conflict.value.status == 409
        assert (await c.revoke(token_id=root.token_id)).revoked
        gone = await c.verify(root.token, "search")
        assert isinstance(gone, Denied) and gone.code == "revoked"


def test_extend_with_the_sync_client_keeps_a_hold_and_reads_refusals(service_factory: object) -> None:
    service: Service = service_factory("memory://")  # type: ignore[operator]
    with Client(service.url, admin_key=ADMIN_KEY) as client:
        root = client.mint(subject="orchestrator", budget="10.00 USD")
        held = client.verify(root.token, "search", cost="2 USD", mode="hold", hold_ttl=5)
        assert isinstance(held, Allowed) and held.hold_id
        kept = client.extend(held.hold_id, 600)
        assert (kept.hold_id, kept.state, kept.amount, kept.currency) == (held.hold_id, "held", "2.00", "USD")
        assert kept.expires_at is not None
        assert client.settle(held.hold_id).state == "settled"
        with pytest.raises(ApiError) as closed:
            client.extend(held.hold_id, 600)
        assert (closed.value.status, closed.value.code) == (409, "conflict")
        with pytest.raises(ApiError) as bad:
            client.extend(held.hold_id, 0)
        assert (bad.value.status, bad.value.field) == (400, "hold_ttl")


async def test_extend_with_the_async_client_returns_what_settle_and_release_return(tmp_path: Path) -> None:
    settings = Settings.from_env({"AGENTCAPS_DATA_DIR": str(tmp_path)})
    transport = httpx.ASGITransport(app=create_app(settings, store=MemoryStore()))
    async with AsyncClient("http://agentcaps.test", admin_key=settings.admin_keys[0], transport=transport) as c:
        root = await c.mint("orchestrator", budget="1.00 USD")
        held = await c.verify(root.token, "search", cost="0.60 USD", mode="hold", hold_ttl=5)
        assert isinstance(held, Allowed) and held.hold_id
        kept = await c.extend(held.hold_id, 60)
        assert isinstance(kept, HoldResponse) and (kept.state, kept.amount) == ("held", "0.60")
        assert isinstance(await c.release(held.hold_id), HoldResponse)
        with pytest.raises(ApiError) as unknown:
            await c.extend("0" * 32 + "." + "0" * 32, 60)
        assert unknown.value.status == 404


@pytest.mark.parametrize("suffix", ["/settle?", "/settle#", "/release?", "/settle?x=", "/../../tokens?"])
async def test_a_hold_id_is_one_path_segment_and_cannot_turn_one_hold_call_into_another(
    tmp_path: Path, suffix: str
) -> None:
    """A tool server that takes a hold id from its caller: `release(id + "/settle?")` used to POST to
    `/v1/holds/<id>/settle?/release`, the settle endpoint, and charge the hold in full instead of releasing it
    (and `settle(id + "/release?")` released it, charging nothing). Whatever the id, it names a hold, never a path."""
    settings = Settings.from_env({"AGENTCAPS_DATA_DIR": str(tmp_path)})
    transport = httpx.ASGITransport(app=create_app(settings, store=MemoryStore()))
    async with AsyncClient("http://agentcaps.test", admin_key=settings.admin_keys[0], transport=transport) as c:
        root = await c.mint("orchestrator", budget="10.00 USD")
        held = await c.verify(root.token, "search", cost="4 USD", mode="hold")
        assert isinstance(held, Allowed) and held.hold_id
        crafted = held.hold_id + suffix
        for call in (lambda: c.settle(crafted), lambda: c.release(crafted), lambda: c.extend(crafted, 60)):
            with pytest.raises(ApiError) as refused:
                await call()
            assert refused.value.status == 404
        budgets = (await c.inspect(root.token)).budgets
        assert budgets is not None and (budgets[0].spent, budgets[0].held) == ("0.00", "4.00")
        assert (await c.release(held.hold_id)).state == "released"


async def test_refusals_read_as_the_service_worded_them_whatever_else_the_body_carries(tmp_path: Path) -> None:
    settings = Settings.from_env({"AGENTCAPS_DATA_DIR": str(tmp_path)})
    transport = httpx.ASGITransport(app=create_app(settings, store=MemoryStore()))
    async with AsyncClient("http://agentcaps.test", admin_key=settings.admin_keys[0], transport=transport) as c:
        root = (await c.mint("orchestrator")).token
        with pytest.raises(ApiError) as forged:  # the service answers a denial body: `allowed` and all
            await c.revoke(root[:-2] + ("A" if root[-2] != "A" else "B") + root[-1])
    assert (forged.value.status, forged.value.code) == (403, "invalid_token")
    assert forged.value.reason.startswith("token") and "{" not in forged.value.reason

    def answer(status: int, content: bytes) -> httpx.MockTransport:
        return httpx.MockTransport(lambda request: httpx.Response(status, content=content))

    for status, content, want in [
        (502, b"<html>bad gateway</html>", (502, "http_error", "<html>bad gateway</html>", None)),
        (400, b'{"code":"bad_request","reason":"why","field":"tool","extra":1}', (400, "bad_request", "why", "tool")),
        (400, b'{"code":1,"reason":"why"}', (400, "http_error", '{"code":1,"reason":"why"}', None)),
    ]:
        with Client("http://x", transport=answer(status, content)) as client, pytest.raises(ApiError) as refused:
            client.inspect("t")
        assert (refused.value.status, refused.value.code, refused.value.reason, refused.value.field) == want


@pytest.mark.parametrize("args", [{"x": float("nan")}, {"a": {"b": [1, float("inf")]}}, {"x": -float("inf")}])
def test_the_client_refuses_what_json_cannot_say_rather_than_send_null(args: dict[str, object]) -> None:
    sent: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(500))
    with Client("http://x", transport=transport) as client, pytest.raises(ValueError, match="is not a JSON number"):
        client.verify("t", "search", args=args)
    assert sent == []
