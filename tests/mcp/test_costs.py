"""The cost file shared by the guard and the gateway: fixed costs, costs read from an argument, computed costs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.mcp import CostError, CostTable
from app.schemas import Money


def test_fixed_and_argument_costs_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "costs.json"
    path.write_text(
        json.dumps(
            {"search": {"amount": "0.01", "currency": "USD"}, "pay": {"from_arg": "order.total", "currency": "EUR"}}
        )
    )
    table = CostTable.load(path)
    assert table.cost_of("search", {}) == Money("0.01", "USD")
    assert table.cost_of("pay", {"order": {"total": 2.5}}) == Money("2.50", "EUR")
    assert table.cost_of("pay", {"order": {"total": "0.000001"}}) == Money("0.000001", "EUR")
    assert table.cost_of("pay", {"order": {"total": 7}}) == Money("7.00", "EUR")
    assert table.cost_of("pay", {"order": {"total": "0"}}) == Money("0.00", "EUR")
    assert table.cost_of("other", {}) is None  # a tool not in the file costs nothing
    assert CostTable.load(None).cost_of("search", {}) is None


@pytest.mark.parametrize(
    "total", [-1, "-1", "1e3", "NaN", "Infinity", True, None, [1], {}, "0.0000001", 10**13, "１", ""]
)
def test_an_argument_cost_that_is_not_an_amount_denies(total: object) -> None:
    table = CostTable({"pay": {"from_arg": "total", "currency": "USD"}})
    with pytest.raises(CostError, match="argument 'total'"):
        table.cost_of("pay", {"total": total})


@pytest.mark.parametrize("args", [{}, {"order": 5}, {"order": {}}, {"order": None}])
def test_a_missing_argument_cost_denies(args: dict[str, Any]) -> None:
    table = CostTable({"pay": {"from_arg": "order.total", "currency": "USD"}})
    with pytest.raises(CostError, match="missing"):
        table.cost_of("pay", args)


@pytest.mark.parametrize(
    "rules",
    [
        {"t": {"currency": "USD"}},
        {"t": {"amount": "1", "from_arg": "a", "currency": "USD"}},
        {"t": {"amount": "1", "currency": "usd"}},
        {"t": {"amount": "x", "currency": "USD"}},
        {"t": {"amount": "-1", "currency": "USD"}},
        {"t": {"amount": 1, "currency": "USD"}},
        {"t": {"amount": "1", "currency": "USD", "extra": 1}},
        {"t": "1 USD"},
    ],
)
def test_a_bad_cost_file_is_refused_at_start(rules: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        CostTable(rules)


def test_a_cost_file_that_is_not_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "costs.json"
    path.write_text('{"search": ')
    with pytest.raises(ValueError, match="cost file"):
        CostTable.load(path)
    with pytest.raises(ValueError, match="cost file"):
        CostTable.load(tmp_path / "missing.json")


def test_computed_costs() -> None:
    table = CostTable(
        computed={
            "summarize": lambda args: f"{len(args['text']) / 1000:.3f} USD",
            "money": lambda args: Money("0.25", "EUR"),
            "free": lambda args: None,
            "broken": lambda args: 1 / 0,
            "odd": lambda args: "lots",
        }
    )
    assert table.cost_of("summarize", {"text": "x" * 2500}) == Money("2.50", "USD")
    assert table.cost_of("money", {}) == Money("0.25", "EUR")
    assert table.cost_of("free", {}) is None
    with pytest.raises(CostError, match="could not be computed"):
        table.cost_of("broken", {})
    with pytest.raises(CostError, match="not an amount"):
        table.cost_of("odd", {})
