"""`expires < T`: RFC 3339 UTC with `Z`, whole seconds, real calendar instants; holds strictly before T."""

from __future__ import annotations

import calendar
import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caveats.expires import Expires, format_instant, parse_instant
from caveats.grammar import CaveatSyntaxError
from tests.caveats.support import LOOKALIKE_NUMBERS, NOW, assert_malformed, assert_parses, code, ctx, ids, run

VALID = [
    ("expires < 2026-12-01T00:00:00Z", Expires(NOW)),
    ("expires < 1970-01-01T00:00:00Z", Expires(0)),
    ("expires < 1970-01-01T00:00:01Z", Expires(1)),
    ("expires < 2024-02-29T23:59:59Z", Expires(1_709_251_199)),  # leap day
    ("expires < 2000-02-29T12:34:56Z", Expires(951_827_696)),  # divisible by 400: leap
    ("expires < 2028-02-29T00:00:00Z", Expires(1_835_395_200)),
    ("expires < 2026-04-30T23:59:59Z", Expires(1_777_593_599)),
    ("expires < 2026-12-31T23:59:59Z", Expires(1_798_761_599)),
    ("expires < 2016-12-31T23:59:59Z", Expires(1_483_228_799)),  # a leap-second day, the second before it
    ("expires < 9999-12-31T23:59:59Z", Expires(253_402_300_799)),
]


@pytest.mark.parametrize(("text", "value"), VALID, ids=ids(VALID))
def test_valid_forms_parse_to_their_instant(text: str, value: Expires) -> None:
    assert_parses(text, value)


MALFORMED = [
    # not a calendar instant
    "2026-02-29T00:00:00Z",  # 2026 is not a leap year
    "2023-02-29T00:00:00Z",
    "2100-02-29T00:00:00Z",  # divisible by 100, not by 400
    "2026-02-30T00:00:00Z",
    "2026-04-31T00:00:00Z",
    "2026-00-10T00:00:00Z",
    "2026-13-01T00:00:00Z",
    "2026-01-00T00:00:00Z",
    "2026-01-32T00:00:00Z",
    "2026-12-01T24:00:00Z",
    "2026-12-01T00:60:00Z",
    "2026-12-01T23:60:00Z",
    "2016-12-31T23:59:60Z",  # no leap seconds
    "2026-12-31T23:59:60Z",
    "2026-12-01T99:99:99Z",
    # before the epoch, or not four digits of year
    "1969-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z",
    "26-12-01T00:00:00Z",
    "12026-12-01T00:00:00Z",
    "+2026-12-01T00:00:00Z",
    "-2026-12-01T00:00:00Z",
    # UTC with Z only: no offsets, not even zero ones; upper-case T and Z
    "2026-12-01T00:00:00+00:00",
    "2026-12-01T00:00:00-00:00",
    "2026-12-01T00:00:00+01:00",
    "2026-12-01T00:00:00+0000",
    "2026-12-01T00:00:00",
    "2026-12-01T00:00:00UTC",
    "2026-12-01T00:00:00GMT",
    "2026-12-01T00:00:00ZZ",
    "2026-12-01t00:00:00Z",
    "2026-12-01T00:00:00z",
    "2026-12-01t00:00:00z",
    # whole seconds
    "2026-12-01T00:00:00.5Z",
    "2026-12-01T00:00:00.000Z",
    "2026-12-01T00:00:00.Z",
    "2026-12-01T00:00:00,5Z",
    "2026-12-01T00:00Z",
    # other layouts RFC 3339 or ISO 8601 allow elsewhere
    "2026-12-01 00:00:00Z",
    "2026-12-01_00:00:00Z",
    "2026-12-01T00:00:00 Z",
    "2026/12/01T00:00:00Z",
    "20261201T000000Z",
    "2026-335T00:00:00Z",
    "2026-W48-2T00:00:00Z",
    "2026-12-1T00:00:00Z",
    "2026-1-01T00:00:00Z",
    "2026-12-01T0:00:00Z",
    "2026-12-01",
    "1796083200",
    "now",
    # digits from other scripts
    "２026-12-01T00:00:00Z",
    "2026-12-01T00:00:0٣Z",
    "2026-１2-01T00:00:00Z",
    *LOOKALIKE_NUMBERS,
]


@pytest.mark.parametrize("value", MALFORMED, ids=ids(MALFORMED))
def test_malformed_instants_deny(value: str) -> None:
    assert_malformed(f"expires < {value}")


@pytest.mark.parametrize(
    ("now", "want"),
    [
        (0, None),
        (NOW - 10**9, None),
        (NOW - 1, None),
        (NOW, "expired"),  # the instant itself is already expired
        (NOW + 1, "expired"),
        (NOW + 10**9, "expired"),
    ],
)
def test_holds_strictly_before_the_instant(now: int, want: str | None) -> None:
    assert code("expires < 2026-12-01T00:00:00Z", ctx(now=now)) == want


def test_only_the_calls_clock_counts() -> None:
    # Context.now, never the wall clock: an instant in 1970 still holds for a call frozen before it.
    assert code("expires < 1970-01-01T00:00:01Z", ctx(now=0)) is None
    assert code("expires < 9999-12-31T23:59:59Z", ctx(now=253_402_300_799)) == "expired"


def test_expired_reason_names_the_instant() -> None:
    denial = run("expires < 2026-12-01T00:00:00Z", ctx(now=NOW))
    assert denial is not None and denial.reason == "token expired at 2026-12-01T00:00:00Z"


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 253_402_300_799))
def test_instants_round_trip(seconds: int) -> None:
    text = format_instant(seconds)
    assert parse_instant(text) == seconds
    assert text == dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 9999), st.integers(0, 99), st.integers(0, 99), st.integers(0, 99), st.integers(0, 99))
def test_a_shaped_instant_parses_exactly_when_it_is_a_real_one(year: int, month: int, day: int, h: int, m: int) -> None:
    # Oracle: datetime's calendar. Seconds take 59/60 so the leap second is tried too.
    for second in (0, 59, 60):
        text = f"{year:04d}-{month:02d}-{day:02d}T{h:02d}:{m:02d}:{second:02d}Z"
        try:
            when = dt.datetime(year, month, day, h, m, second, tzinfo=dt.UTC)
        except ValueError:
            when = None
        if when is None or year < 1970:
            with pytest.raises(CaveatSyntaxError):
                parse_instant(text)
        else:
            assert parse_instant(text) == calendar.timegm(when.timetuple())
