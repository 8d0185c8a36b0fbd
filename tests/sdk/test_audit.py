"""The audit log through the SDK: Client.audit and AsyncClient.audit read one page with the admin key or a token,
with the service's filters and paging, and revoke(token_id=, chain=) revokes one chain the log shows."""

from __future__ import annotations

import pytest

from app.sdk import ApiError, AsyncClient, Client, Token
from tests.keys import ADMIN_KEY
from tests.processes import Service


@pytest.fixture
def service(service_factory: object) -> Service:
    return service_factory("memory://")  # type: ignore[operator, no-any-return]


@pytest.fixture
def tree(service: Service) -> tuple[str, str, str]:
    """(root, a, b): a's call to search allowed, b's payment over its budget denied."""
    with Client(service.url, admin_key=ADMIN_KEY) as admin:
        root = admin.mint("orchestrator", budget="1.00 USD", tools=["search", "pay"]).token
        a = str(Token.parse(root).attenuate(to="a"))
        b = str(Token.parse(root).attenuate(to="b"))
        admin.verify(a, "search", args={"q": "x"})
        admin.verify(b, "pay", cost="5.00 USD")
    return root, a, b


def test_audit_reads_a_page_with_filters_and_pages_on(service: Service, tree: tuple[str, str, str]) -> None:
    root, _, _ = tree
    token_id = Token.parse(root).token_id
    with Client(service.url, admin_key=ADMIN_KEY) as admin:
        page = admin.audit()
        assert [e["kind"] for e in page["events"]] == ["verify", "verify", "mint"] and "next" not in page
        denied = admin.audit(allowed=False)["events"]
        assert [(e["holder"], e["code"]) for e in denied] == [("b", "budget_exceeded")]
        assert [e["args"] for e in admin.audit(tool="search", kind="verify")["events"]] == [{"q": "x"}]
        assert admin.audit(token_id=token_id, since="2999-01-01T00:00:00Z")["events"] == []
        first = admin.audit(limit=2)
        assert len(first["events"]) == 2 and first["next"] == first["events"][-1]["id"]
        rest = admin.audit(limit=2, after=first["next"])
        assert [e["kind"] for e in rest["events"]] == ["mint"] and "next" not in rest
        with pytest.raises(ApiError) as refused:
            admin.audit(limit=0)
        assert (refused.value.status, refused.value.field) == (400, "limit")


def test_a_token_reads_its_subtree_and_the_admin_key_revokes_one_chain(
    service: Service, tree: tuple[str, str, str]
) -> None:
    root, a, b = tree
    with Client(service.url, token=a) as reader:
        mine = reader.audit()["events"]
    assert [e["holder"] for e in mine] == ["a"]
    with Client(service.url, token=root) as everything:
        assert len(everything.audit()["events"]) == 3
    with Client(service.url, admin_key=ADMIN_KEY) as admin, Client(service.url, token=root) as holder:
        with pytest.raises(ApiError) as refused:  # the chain's revocation is the operator's, not its root holder's
            holder.revoke(token_id=mine[0]["token_id"], chain=mine[0]["chain"])
        assert refused.value.status == 401
        done = admin.revoke(token_id=mine[0]["token_id"], chain=mine[0]["chain"])
        assert done.revoked and done.token_id == mine[0]["token_id"]
        assert getattr(admin.verify(a, "search"), "code", None) == "revoked"
        assert admin.verify(b, "search").allowed and admin.verify(root, "search").allowed
        assert admin.audit(kind="revoke")["events"][0]["chain"] == mine[0]["chain"]


async def test_async_client_reads_the_same_page(service: Service, tree: tuple[str, str, str]) -> None:
    _, a, _ = tree
    async with AsyncClient(service.url, admin_key=ADMIN_KEY) as admin, AsyncClient(service.url, token=a) as reader:
        assert (await admin.audit(kind="verify", allowed=True))["events"] == (await reader.audit())["events"]
