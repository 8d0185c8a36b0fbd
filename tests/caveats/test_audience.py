"""`audience in a,b`: the verifying tool server is one of these names; a verifier that names none is not."""

from __future__ import annotations

import pytest

from caveats.audience import Audience
from tests.caveats.support import N128, N129, assert_malformed, assert_parses, code, ctx, ids, run

VALID = [
    ("audience in payments-srv,search-srv", Audience(("payments-srv", "search-srv"))),
    ("audience in a", Audience(("a",))),
    ("audience in srv:8443", Audience(("srv:8443",))),
    ("audience in https://srv.example/x@y", Audience(("https://srv.example/x@y",))),
    (f"audience in {N128},b", Audience((N128, "b"))),
]


@pytest.mark.parametrize(("text", "value"), VALID, ids=ids(VALID))
def test_valid_lists_parse_to_their_names(text: str, value: Audience) -> None:
    assert_parses(text, value)


MALFORMED = [
    "",
    ",",
    "a,",
    ",a",
    "a,,b",
    "a b",
    "a, b",
    "a*",  # no patterns: an audience is one exact name
    "*",
    N129,
    *[f"{c}abc" for c in "-_.:@/*"],
    "ｓrv",
    "srv\u00a0",
    "srv\u2060",
]


@pytest.mark.parametrize("value", MALFORMED, ids=ids(MALFORMED))
def test_malformed_lists_deny(value: str) -> None:
    assert_malformed(f"audience in {value}")


CHECKS = [
    ("payments-srv", None),
    ("search-srv", None),
    ("Payments-srv", "audience_mismatch"),
    ("payments", "audience_mismatch"),
    ("payments-srv2", "audience_mismatch"),
    ("payments-srv,search-srv", "audience_mismatch"),
    ("payments-*", "audience_mismatch"),
    ("", "audience_mismatch"),
    (None, "audience_mismatch"),  # a verifier that named no audience
]


@pytest.mark.parametrize(("audience", "want"), CHECKS, ids=ids(CHECKS))
def test_the_verifier_must_be_listed(audience: str | None, want: str | None) -> None:
    assert code("audience in payments-srv,search-srv", ctx(audience=audience)) == want


def test_reasons_say_who_verified() -> None:
    missing = run("audience in a,b", ctx(audience=None))
    assert missing is not None
    assert missing.reason == "a verifier that named no audience is not among the allowed audiences: a,b"
    other = run("audience in a,b", ctx(audience="c"))
    assert other is not None and other.reason == "'c' is not among the allowed audiences: a,b"
