"""Caveat text from typed restrictions: one builder behind minting (HTTP) and offline attenuation (SDK).

Every text it returns parses back to the kind it meant; anything else raises ValueError naming the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from caveats.base import Caveat
from caveats.denial import Denial
from caveats.expires import format_instant
from caveats.money import Amount, format_micros
from caveats.registry import parse


def money_text(value: Amount | str) -> str:
    return f"{format_micros(value.micros)} {value.currency}" if isinstance(value, Amount) else value


def restriction_caveats(
    *,
    to: str | None = None,
    budget: Amount | str | None = None,
    cost_cap: Amount | str | None = None,
    tools: Iterable[str] | None = None,
    audience: Iterable[str] | None = None,
    expires_at: int | None = None,
    max_depth: int | None = None,
    rate: str | None = None,
    args: Mapping[str, str] | None = None,
    approval_tools: Iterable[str] | None = None,
    approval_above: Amount | str | None = None,
    caveats: Iterable[str] | None = None,
) -> list[str]:
    """The caveats for one hop, `delegate = <to>` first. `args` maps a dot-path to 'OP VALUE' (`'<= 3'`);
    `approval_tools` and `approval_above` are the calls that then wait for a human's approval."""
    fields: list[tuple[str, str]] = []
    if to is not None:
        fields.append(("to", f"delegate = {to}"))
    if expires_at is not None:
        fields.append(("expires", f"expires < {instant_text(expires_at)}"))
    if tools is not None:
        fields.append(("tools", f"tools in {','.join(names(tools, 'tools'))}"))
    if audience is not None:
        fields.append(("audience", f"audience in {','.join(names(audience, 'audience'))}"))
    if budget is not None:
        fields.append(("budget", f"budget <= {money_text(budget)}"))
    if cost_cap is not None:
        fields.append(("cost_cap", f"cost <= {money_text(cost_cap)}"))
    if rate is not None:
        fields.append(("rate", f"rate <= {rate}"))
    if max_depth is not None:
        fields.append(("max_depth", f"depth <= {max_depth}"))
    for path, condition in (args or {}).items():
        fields.append((f"args.{path}", f"arg.{path} {condition}"))
    if approval_tools is not None:
        fields.append(("approval_tools", f"approval in {','.join(names(approval_tools, 'approval_tools'))}"))
    if approval_above is not None:
        fields.append(("approval_above", f"approval > {money_text(approval_above)}"))
    for n, text in enumerate(caveats or ()):
        fields.append((f"caveats[{n}]", text))
    for name, text in fields:
        checked_parse(name, text)
    return [text for _, text in fields]


def instant_text(seconds: int) -> str:
    """The instant's caveat text; one the platform's time_t cannot hold is a field error, not OverflowError."""
    try:
        return format_instant(seconds)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"expires: {seconds} is not a time from 1970 to 9999") from None


def names(items: Iterable[str], field: str) -> list[str]:
    """A list of names; a bare string would otherwise be joined letter by letter (`s,e,a,r,c,h`), and an item
    holding a comma would pass as several names."""
    if isinstance(items, str):
        raise ValueError(f"{field}: give a list of names, not one string")
    listed = list(items)
    if not listed:  # else `tools in ` with nothing after it, refused for its spacing, which would mislead
        raise ValueError(f"{field}: give at least one name")
    for item in listed:
        if not isinstance(item, str) or "," in item:
            raise ValueError(f"{field}: {item!r} is not one name")
    return listed


def checked_parse(name: str, text: str) -> Caveat:
    if not isinstance(text, str):  # bytes would parse, then travel on as bytes where text is promised
        raise ValueError(f"{name}: caveat text must be a string, got {type(text).__name__}")
    parsed = parse(text)
    if isinstance(parsed, Denial):
        raise ValueError(f"{name}: {parsed.reason}")
    return parsed
