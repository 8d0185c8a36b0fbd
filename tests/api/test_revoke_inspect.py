"""POST /v1/revoke and POST /v1/inspect (docs/api.md)."""

from __future__ import annotations

import time

import pytest

from app.token.mint import attenuate
from tests.api.conftest import Api, padded


def money(amount: str, currency: str = "USD") -> dict[str, str]:
    return {"amount": amount, "currency": currency}


def iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(seconds)))


# -- revoke --------------------------------------------------------------------------------------------


def test_revoking_a_token_revokes_its_descendants_not_its_ancestors_or_siblings(api: Api) -> None:
    minted = api.mint(budget=money("10"))
    root = minted["token"]
    child = attenuate(root, ["delegate = a", "budget <= 5 USD"])
    grandchild = attenuate(child, ["delegate = b"])
    restricted = attenuate(child, ["tools in search"])  # shared without a new hop: still derived
    sibling = attenuate(root, ["delegate = c"])
    r = api.post("/v1/revoke", {"token": child})  # anyone holding it may revoke it: no key
    assert r.status_code == 200
    assert r.json() == {"revoked": True, "token_id": minted["token_id"]}
    for token, whose in [
        (child, "this token"),
        (grandchild, "the token it derives from"),
        (restricted, "the token it derives from"),
        (padded(child), "this token"),
    ]:
        denied = api.denied(token, "revoked", cost=money("1"))
        assert denied["reason"] == f"{whose} (held by a at hop 1) was revoked"
        assert [b["spent"] for b in denied["budgets"]][:2] == ["0.00", "0.00"]
    api.allowed(root, cost=money("1"))
    api.allowed(sibling, cost=money("1"))
    # Idempotent, and revoking again through another encoding changes nothing.
    assert api.post("/v1/revoke", {"token": padded(child)}).status_code == 200
    api.allowed(sibling)


def test_revoking_the_root_token_revokes_everything_derived(api: Api) -> None:
    root = api.token()
    child = attenuate(root, ["delegate = a"])
    assert api.post("/v1/revoke", {"token": root}).status_code == 200
    api.denied(root, "revoked")
    api.denied(child, "revoked")


def test_a_revoked_token_is_denied_after_it_would_have_been_allowed_by_a_cached_verify(api: Api) -> None:
    token = api.token()
    api.allowed(token)  # the signature check is cached; revocation must still be read on every call
    api.post("/v1/revoke", {"token": token})
    api.denied(token, "revoked")


def test_admin_revokes_a_whole_root_by_token_id(api: Api) -> None:
    minted = api.mint()
    root = minted["token"]
    child = attenuate(root, ["delegate = a"])
    other = api.token()
    r = api.post("/v1/revoke", {"token_id": minted["token_id"]})
    assert r.status_code == 401
    api.allowed(child)
    r = api.post("/v1/revoke", {"token_id": minted["token_id"]}, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    api.allowed(root)
    r = api.post("/v1/revoke", {"token_id": minted["token_id"]}, headers=api.admin)
    assert r.status_code == 200
    assert r.json() == {"revoked": True, "token_id": minted["token_id"]}
    denied = api.denied(root, "revoked")
    assert "caveat" not in denied  # the whole root: no caveat caused it
    api.denied(child, "revoked")
    api.allowed(other)


def test_revoke_with_a_bad_signature_is_403_invalid_token_and_writes_nothing(api: Api) -> None:
    token = api.token()
    api.allowed(token, request_id="warm")
    before = api.snapshot()
    bad = token[:-3] + ("AAA" if token[-3:] != "AAA" else "BAA")
    r = api.post("/v1/revoke", {"token": bad})
    assert r.status_code == 403
    assert r.json()["code"] == "invalid_token" and r.json()["allowed"] is False
    assert api.snapshot() == before
    api.allowed(token)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"token": "x", "token_id": "0" * 32},
        {"token_id": "0" * 31},
        {"token_id": "G" * 32},
        {"token_id": 7},
        {"token": 7},
        {"tokens": "x"},
    ],
)
def test_revoke_bodies_are_strict(api: Api, body: dict[str, object]) -> None:
    r = api.post("/v1/revoke", body, headers=api.admin)
    assert r.status_code == 400, r.text
    assert r.json()["field"]
    assert api.dbsize() == 0


def test_an_empty_token_is_invalid_not_a_bad_request(api: Api) -> None:
    r = api.post("/v1/revoke", {"token": ""})
    assert r.status_code == 403 and r.json()["code"] == "invalid_token"
    api.denied("", "invalid_token")
    assert api.post("/v1/inspect", {"token": ""}).json()["valid"] is False
    assert api.dbsize() == 0


def test_revocation_survives_the_tokens_expiry_window(api: Api) -> None:
    token = api.token(expires_in=60)
    api.post("/v1/revoke", {"token": token})
    api.clock.advance(30)
    api.denied(token, "revoked")
    api.clock.advance(30)
    api.denied(token, "expired")


# -- inspect -------------------------------------------------------------------------------------------


def test_inspect_explains_a_valid_token(api: Api) -> None:
    minted = api.mint(budget=money("10"), tools=["search", "fetch"], expires_in=600, max_depth=2)
    child = attenuate(minted["token"], ["delegate = researcher", "budget <= 2 USD", "tools in search"])
    api.allowed(child, cost=money("0.5"))
    hold = api.allowed(child, cost=money("0.25"), mode="hold")
    assert hold["hold_id"]
    body = api.post("/v1/inspect", {"token": child}).json()
    expires = iso(api.clock.now + 600)
    assert body["valid"] is True
    assert body["token_id"] == minted["token_id"]
    assert body["key_id"] == api.settings.ring.signing_kid
    assert body["holder"] == "researcher"
    assert body["delegation"] == ["orchestrator", "researcher"]
    assert body["expires_at"] == expires
    assert body["revoked"] is False
    assert body["denials"] == []
    assert body["tools"] == ["search"]
    assert body["hops"] == [
        {
            "hop": 0,
            "agent": "orchestrator",
            "caveats": [
                {"caveat": "delegate = orchestrator"},
                {"caveat": f"expires < {expires}"},
                {"caveat": "tools in search,fetch"},
                {"caveat": "budget <= 10.00 USD"},
                {"caveat": "depth <= 2"},
            ],
        },
        {
            "hop": 1,
            "agent": "researcher",
            "caveats": [
                {"caveat": "delegate = researcher"},
                {"caveat": "budget <= 2 USD"},
                {"caveat": "tools in search"},
            ],
        },
    ]
    assert body["budgets"] == [
        {
            "hop": 0,
            "caveat": "budget <= 10.00 USD",
            "limit": "10.00",
            "spent": "0.50",
            "held": "0.25",
            "remaining": "9.25",
            "currency": "USD",
        },
        {
            "hop": 1,
            "caveat": "budget <= 2 USD",
            "limit": "2.00",
            "spent": "0.50",
            "held": "0.25",
            "remaining": "1.25",
            "currency": "USD",
        },
    ]


def test_inspect_writes_nothing(api: Api) -> None:
    token = api.token(budget=money("10"), rate="1/1h")
    api.allowed(token, cost=money("1"))
    before = api.snapshot()
    for _ in range(3):
        assert api.post("/v1/inspect", {"token": token}).status_code == 200
    assert api.snapshot() == before
    assert api.verify(token).status_code == 429  # inspect used no rate either


def test_inspect_lists_the_denials_that_apply_now(api: Api) -> None:
    root = api.token(expires_in=10, max_depth=0)
    token = attenuate(root, ["delegate = a", "color = red", "budget <= x USD", "tools in search"])
    api.clock.advance(10)
    body = api.post("/v1/inspect", {"token": token}).json()
    assert body["valid"] is True
    codes = [(d["code"], d["hop"]) for d in body["denials"]]
    assert codes == [("expired", 0), ("depth_exceeded", 0), ("unknown_caveat", 1), ("malformed_caveat", 1)]
    assert all(d["allowed"] is False and d["caveat"] and d["reason"] for d in body["denials"])
    flagged = {c["caveat"]: c.get("denies") for hop in body["hops"] for c in hop["caveats"]}
    assert flagged["color = red"] == "unknown_caveat"
    assert flagged["budget <= x USD"] == "malformed_caveat"
    assert flagged["tools in search"] is None
    # Call-dependent caveats (tools, args, cost, audience) deny nothing by themselves.
    assert "tool_not_allowed" not in [d["code"] for d in body["denials"]]


def test_inspect_never_lists_an_approval_caveat_as_a_denial(api: Api) -> None:
    # Whether a call waits for a human depends on the call: nothing to deny now. One that does not parse denies.
    root = api.token(caveats=["approval > 1.00 USD"])
    token = attenuate(root, ["delegate = a", "approval in pay,wire.*", "approval >= 1 USD"])
    body = api.post("/v1/inspect", {"token": token}).json()
    assert body["valid"] is True
    assert [(d["code"], d["caveat"], d["hop"]) for d in body["denials"]] == [
        ("malformed_caveat", "approval >= 1 USD", 1)
    ]
    flagged = {c["caveat"]: c.get("denies") for hop in body["hops"] for c in hop["caveats"]}
    assert flagged["approval > 1.00 USD"] is None and flagged["approval in pay,wire.*"] is None


def test_inspect_shows_revocation(api: Api) -> None:
    root = api.token()
    child = attenuate(root, ["delegate = a"])
    api.post("/v1/revoke", {"token": child})
    body = api.post("/v1/inspect", {"token": child}).json()
    assert body["revoked"] is True
    revoked = body["denials"][0]
    assert revoked == {"allowed": False, "code": "revoked", "reason": "this token (held by a at hop 1) was revoked"}
    assert {k: api.denied(child, "revoked")[k] for k in revoked} == revoked  # as verify says it
    assert api.post("/v1/inspect", {"token": root}).json()["revoked"] is False
    # Below the revoked token, the reason names whose token it was, not an unrelated caveat of its own.
    grandchild = attenuate(child, ["delegate = b", "depth <= 1"])
    denied = api.denied(grandchild, "revoked")
    assert denied["reason"] == "the token it derives from (held by a at hop 1) was revoked"
    assert "caveat" not in denied and "hop" not in denied  # no caveat caused it: none is named


def test_inspect_lists_revocation_after_the_stateless_denials_as_verify_decides(api: Api) -> None:
    token = attenuate(api.token(expires_in=10), ["delegate = a"])
    api.post("/v1/revoke", {"token": token})
    api.clock.advance(10)
    body = api.post("/v1/inspect", {"token": token}).json()
    assert [d["code"] for d in body["denials"]] == ["expired", "revoked"]
    assert body["denials"][0]["code"] == api.denied(token, "expired")["code"]


def test_inspect_an_invalid_token(api: Api) -> None:
    token = api.token()
    before = api.snapshot()
    r = api.post("/v1/inspect", {"token": token + "x"})
    assert r.status_code == 200
    body = r.json()
    assert body["valid"] is False
    assert body["reason"]
    assert set(body) == {"valid", "reason"}
    assert api.snapshot() == before


def test_inspect_lists_full_rate_windows_and_spent_budgets_as_verify_would_deny_them(api: Api) -> None:
    token = attenuate(api.token(budget={"amount": "1", "currency": "USD"}, rate="2/1m"), ["delegate = a"])
    clear = api.post("/v1/inspect", {"token": token}).json()
    assert clear["denials"] == []
    api.allowed(token, cost={"amount": "0.60", "currency": "USD"})
    api.allowed(token, cost={"amount": "0.40", "currency": "USD"})
    body = api.post("/v1/inspect", {"token": token}).json()
    got = [(d["code"], d["caveat"], d["hop"]) for d in body["denials"]]
    assert got == [("rate_limited", "rate <= 2/1m", 0), ("budget_exceeded", "budget <= 1.00 USD", 0)]
    assert body["denials"][0]["reason"] == api.denied(token, "rate_limited", status=429)["reason"]
    assert body["denials"][1]["reason"] == (
        "nothing of its 1.00 USD remains: a call with a cost is denied (caveat 'budget <= 1.00 USD' at hop 0)"
    )
    flagged = {c["caveat"]: c.get("denies") for hop in body["hops"] for c in hop["caveats"]}
    assert (flagged["rate <= 2/1m"], flagged["budget <= 1.00 USD"]) == ("rate_limited", "budget_exceeded")
    api.clock.advance(60)  # the window moves on; the budget stays spent
    later = api.post("/v1/inspect", {"token": token}).json()
    assert [d["code"] for d in later["denials"]] == ["budget_exceeded"]
    assert api.allowed(token)["token_id"]  # a free call still passes, as inspect says
