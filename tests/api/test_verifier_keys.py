"""AGENTCAPS_VERIFIER_KEYS (docs/api.md, Verifier keys): the verifier's bearer key names its audience."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.conftest import Api, ApiFactory, make_settings
from tests.keys import PAYMENTS_KEY, VERIFIER_KEY, WRONG_VERIFIER_KEY

SEARCH = {"Authorization": f"Bearer {VERIFIER_KEY}"}
PAYMENTS = {"Authorization": f"Bearer {PAYMENTS_KEY}"}
USD = {"amount": "1", "currency": "USD"}


@pytest.fixture
def keyed(make_api: ApiFactory, tmp_path: Path) -> Api:
    keys = f"search-srv:{VERIFIER_KEY},payments-srv:{PAYMENTS_KEY}"
    return make_api(make_settings(tmp_path, AGENTCAPS_VERIFIER_KEYS=keys))


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": f"Bearer {WRONG_VERIFIER_KEY}"},
        {"Authorization": f"Basic {VERIFIER_KEY}"},
        {"Authorization": f"Bearer {VERIFIER_KEY}x"},
    ],
    ids=["missing", "wrong", "not-bearer", "longer"],
)
def test_verify_needs_a_verifier_key(keyed: Api, headers: dict[str, str]) -> None:
    token = keyed.token(budget={"amount": "10", "currency": "USD"})
    before = keyed.snapshot()
    r = keyed.verify(token, headers=headers, cost=USD)
    assert r.status_code == 401
    assert r.json()["code"] == "unauthorized"
    assert VERIFIER_KEY not in r.text
    assert keyed.snapshot() == before


@pytest.mark.parametrize("path", ["/v1/verify", "/v1/holds/x/settle", "/v1/holds/x/release", "/v1/holds/x/extend"])
def test_without_a_key_a_malformed_body_is_401_not_a_lesson_in_fields(keyed: Api, path: str) -> None:
    r = keyed.client.post(path, content=b'{"nonsense": [1, 2]}', headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["code"]) == (401, "unauthorized"), r.text
    assert "nonsense" not in r.text


def test_the_admin_key_is_not_a_verifier_key(keyed: Api) -> None:
    token = keyed.token()
    assert keyed.verify(token, headers=keyed.admin).status_code == 401
    assert keyed.post("/v1/tokens", {"subject": "o"}, headers=SEARCH).status_code == 401


def test_the_key_names_the_audience(keyed: Api) -> None:
    token = keyed.token(audience=["search-srv"])
    body = keyed.verify(token, headers=SEARCH).json()
    assert body["allowed"] is True
    # The same body audience as the key's name is fine; another is 401, not a decision.
    assert keyed.verify(token, headers=SEARCH, audience="search-srv").status_code == 200
    r = keyed.verify(token, headers=SEARCH, audience="payments-srv")
    assert r.status_code == 401
    denied = keyed.verify(token, headers=PAYMENTS)
    assert denied.status_code == 403 and denied.json()["code"] == "audience_mismatch"
    # A verifier cannot borrow another's name through the body either.
    assert keyed.verify(token, headers=PAYMENTS, audience="search-srv").status_code == 401


def test_holds_need_a_verifier_key(keyed: Api) -> None:
    token = keyed.token(budget={"amount": "10", "currency": "USD"})
    hold_id = keyed.verify(token, headers=SEARCH, cost=USD, mode="hold").json()["hold_id"]
    assert keyed.settle(hold_id).status_code == 401
    assert keyed.release(hold_id).status_code == 401
    assert keyed.settle(hold_id, headers=keyed.admin).status_code == 401
    assert keyed.release(hold_id, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert keyed.post(f"/v1/holds/{hold_id}/extend", {"hold_ttl": 60}).status_code == 401
    assert keyed.budgets(token)[0]["held"] == "1.00"
    r = keyed.settle(hold_id, {"amount": "0.5"}, headers=SEARCH)
    assert r.status_code == 200 and r.json()["amount"] == "0.50"


def test_a_hold_is_closed_only_by_the_verifier_that_made_it(keyed: Api) -> None:
    """Another verifier that learns a hold id finds no such hold: it can neither settle nor release it."""
    token = keyed.token(budget={"amount": "10", "currency": "USD"}, audience=["search-srv", "payments-srv"])
    hold_id = keyed.verify(token, headers=SEARCH, cost=USD, mode="hold").json()["hold_id"]
    before = keyed.snapshot()
    extend = keyed.post(f"/v1/holds/{hold_id}/extend", {"hold_ttl": 60}, headers=PAYMENTS)
    for r in (keyed.settle(hold_id, headers=PAYMENTS), keyed.release(hold_id, headers=PAYMENTS), extend):
        assert (r.status_code, r.json()["code"]) == (404, "not_found"), r.text
    assert keyed.snapshot() == before
    assert keyed.post(f"/v1/holds/{hold_id}/extend", {"hold_ttl": 60}, headers=SEARCH).json()["state"] == "held"
    assert keyed.settle(hold_id, headers=SEARCH).json()["state"] == "settled"
    assert keyed.settle(hold_id, headers=PAYMENTS).status_code == 404  # settled, and still not payments-srv's
    assert keyed.budgets(token)[0]["spent"] == "1.00"


def test_without_verifier_keys_any_caller_closes_a_hold_whose_id_it_has(api: Api) -> None:
    token = api.token(budget={"amount": "10", "currency": "USD"})
    hold_id = api.verify(token, cost=USD, mode="hold", audience="search-srv").json()["hold_id"]
    assert api.release(hold_id).json()["state"] == "released"


def test_revoke_and_inspect_need_no_verifier_key(keyed: Api) -> None:
    token = keyed.token()
    assert keyed.post("/v1/inspect", {"token": token}).status_code == 200
    assert keyed.post("/v1/revoke", {"token": token}).status_code == 200
    assert keyed.verify(token, headers=SEARCH).json()["code"] == "revoked"


def test_without_verifier_keys_the_body_names_the_audience(api: Api) -> None:
    token = api.token(audience=["search-srv"])
    api.allowed(token, audience="search-srv")
    api.allowed(token, audience="search-srv", headers={"Authorization": "Bearer anything-at-all"})
    api.denied(token, "audience_mismatch", audience="payments-srv")
