"""A verify answered 503 may have charged (the store decided, its answer was lost): the 503 names a request_id,
the caller's or one made up for the call, and resending the request with it never charges twice.

Faults come from the TCP proxy of tests/store/test_faults.py between the app and the real Redis: `lose` passes the
script call on and cuts the connection before its reply (the store charged), `drop` cuts it before (it did not).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.api.app import create_app
from app.config import Settings
from app.store.redis import RedisStore
from app.store.runner import NodeRunner
from tests.proxy import Proxy

USD = {"amount": "1", "currency": "USD"}


@pytest.fixture
async def client(proxy: Proxy, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app on this test's event loop, where the proxy runs too (litestar's test clients block it)."""
    settings = Settings.from_env({"AGENTCAPS_DATA_DIR": str(tmp_path), "AGENTCAPS_LOCATION": "http://agentcaps.test"})
    store = RedisStore(NodeRunner(proxy.url, timeout=0.5))
    admin = {"authorization": f"Bearer {settings.admin_keys[0]}"}
    transport = httpx.ASGITransport(create_app(settings, store=store))
    async with httpx.AsyncClient(transport=transport, base_url="http://agentcaps.test", headers=admin) as c:
        yield c
    await store.close()


async def mint(client: httpx.AsyncClient) -> str:
    r = await client.post("/v1/tokens", json={"subject": "o", "budget": {"amount": "10", "currency": "USD"}})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


async def spent(client: httpx.AsyncClient, token: str) -> str:
    r = await client.post("/v1/inspect", json={"token": token})
    return str(r.json()["budgets"][0]["spent"])


@pytest.mark.parametrize(
    ("mode", "charged"), [("lose", True), ("drop", False)], ids=["after-the-store-charged", "before-it-ran"]
)
@pytest.mark.parametrize("given", [None, "call-1"], ids=["made-up-id", "callers-id"])
async def test_a_503_names_the_request_id_whose_resend_charges_once(
    proxy: Proxy, client: httpx.AsyncClient, mode: str, charged: bool, given: str | None
) -> None:
    token = await mint(client)
    body: dict[str, Any] = {"token": token, "tool": "search", "cost": USD}
    if given is not None:
        body["request_id"] = given
    proxy.mode = mode
    r = await client.post("/v1/verify", json=body)
    proxy.mode = "forward"
    assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
    answer = r.json()
    request_id = answer["request_id"]
    assert request_id == given if given is not None else request_id.startswith("agentcaps-")
    assert answer == {
        "allowed": False,
        "code": "store_unavailable",
        "reason": answer["reason"],
        "request_id": request_id,
    }
    assert request_id in answer["reason"] and "replays the decision instead of charging again" in answer["reason"]
    assert await spent(client, token) == ("1.00" if charged else "0.00")

    resent = await client.post("/v1/verify", json=body | {"request_id": request_id})
    assert resent.status_code == 200, resent.text
    # The store decided before the 503: the resend is that decision, replayed. It had not: this is the first.
    assert resent.json().get("replayed", False) is charged
    assert await spent(client, token) == "1.00"
    again = await client.post("/v1/verify", json=body | {"request_id": request_id})
    assert (again.status_code, again.json()["replayed"], await spent(client, token)) == (200, True, "1.00")


async def test_calls_without_a_request_id_stay_separate_charges(proxy: Proxy, client: httpx.AsyncClient) -> None:
    """Each call gets an id of its own: two identical requests without one are two charges, as always."""
    token = await mint(client)
    body = {"token": token, "tool": "search", "cost": USD}
    for _ in range(2):
        r = await client.post("/v1/verify", json=body)
        assert r.status_code == 200 and "replayed" not in r.json() and "request_id" not in r.json(), r.text
    assert await spent(client, token) == "2.00"
