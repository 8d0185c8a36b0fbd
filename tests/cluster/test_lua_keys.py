"""Every key a Lua script touches is built from the root's base key: a static proof that needs no Redis.

On a cluster, Redis 7.0 itself refuses a cross-slot key inside a `#!lua` script (test_cluster_store proves it),
but a single Redis or a cluster node owning both slots would not (scripts without a shebang are not checked at
all), so this reads every script: each redis.call's key arguments must be `key(...)`, `HOLDS`, or a local that
is only ever assigned `key(...)`; `base` is KEYS[1] and nothing else reads KEYS. A new command or a new way of
naming a key fails here until it is classified.
"""

from __future__ import annotations

import re
from importlib import resources

import pytest

LUA = resources.files("app.store") / "lua"
FILES = sorted(p.name for p in LUA.iterdir() if p.name.endswith(".lua"))

# Which arguments of each command are keys: "first" or "all".
KEY_ARGS = {
    "GET": "first",
    "MGET": "all",
    "SET": "first",
    "EXISTS": "all",
    "DEL": "all",
    "ZADD": "first",
    "ZREM": "first",
    "ZCARD": "first",
    "ZCOUNT": "first",
    "ZRANGE": "first",
    "ZRANGEBYSCORE": "first",
    "ZREMRANGEBYSCORE": "first",
    "HSET": "first",
    "HMGET": "first",
    "HINCRBY": "first",
    "HDEL": "first",
    "PEXPIRE": "first",
    "PEXPIREAT": "first",
    "PEXPIRETIME": "first",
    "ZSCORE": "first",
    "ZREVRANGE": "first",
    "ZREMRANGEBYRANK": "first",
    "ZREVRANGEBYSCORE": "first",
    "HEXISTS": "first",
    "HLEN": "first",
    "HVALS": "first",
    "XADD": "first",
    "XTRIM": "first",
    "XRANGE": "first",
    "XREVRANGE": "first",
    "TIME": "none",
    "PUBLISH": "none",  # a channel, not a key: a cluster carries it to every node
}
CALL = re.compile(r"redis\.p?call\(")
ASSIGN = re.compile(r"(?<![=~<>.\w])(?:local\s+)?([A-Za-z_]\w*)(\[[^\]]*\])?\s*=(?!=)\s*([^\n]*)")


def source(name: str) -> str:
    text = (LUA / name).read_text()
    return re.sub(r"--[^\n]*", "", text)  # comments may say anything


def calls(text: str) -> list[list[str]]:
    """The argument expressions of every redis.call / redis.pcall, split at top-level commas."""
    out = []
    for m in CALL.finditer(text):
        depth, args, current, i = 1, [], "", m.end()
        while depth:
            c = text[i]
            if c in "({[":
                depth += 1
            elif c in ")}]":
                depth -= 1
            if depth == 1 and c == ",":
                args.append(current.strip())
                current = ""
            elif depth:
                current += c
            i += 1
        args.append(current.strip())
        out.append(args)
    return out


def key_names(text: str) -> tuple[set[str], set[str]]:
    """Locals assigned only `key(...)`, and tables whose elements are only assigned `key(...)`."""
    scalars: dict[str, bool] = {}
    tables: dict[str, bool] = {}
    for name, index, rhs in ASSIGN.findall(text):
        rhs = rhs.strip()
        if index:
            tables[name] = tables.get(name, True) and rhs.startswith("key(")
        elif rhs == "{}":
            tables.setdefault(name, True)
        else:
            scalars[name] = scalars.get(name, True) and rhs.startswith("key(")
    table_names = {n for n, ok in tables.items() if ok}
    # `for j, k in ipairs(rv)` binds k to elements of a key table.
    for name, table in re.findall(r"for\s+\w+\s*,\s*(\w+)\s+in\s+ipairs\((\w+)\)", text):
        scalars[name] = scalars.get(name, True) and table in table_names
    return {n for n, ok in scalars.items() if ok}, table_names


def is_key(expr: str, scalars: set[str], tables: set[str]) -> bool:
    if expr.startswith("key(") or expr in ("HOLDS", "APPROVALS") or expr in scalars:
        return True
    m = re.fullmatch(r"unpack\((\w+)\)", expr)
    return m is not None and m.group(1) in tables


@pytest.mark.parametrize("name", [f for f in FILES if f != "lib.lua"])
def test_every_key_a_script_touches_is_built_from_the_base_key(name: str) -> None:
    text = source("lib.lua") + "\n" + source(name)  # what Redis runs: lib.lua, then the script
    scalars, tables = key_names(text)
    found = calls(text)
    assert found, "no redis.call found: the parser is broken"
    for args in found:
        command = args[0].strip("'\"").upper()
        assert command in KEY_ARGS, f"{name}: classify {command} in KEY_ARGS (which arguments are keys?)"
        keys = {"all": args[1:], "first": args[1:2], "none": []}[KEY_ARGS[command]]
        for expr in keys:
            assert is_key(expr, scalars, tables), f"{name}: {command} on {expr!r}, not a key built from base"


def test_lib_builds_every_key_from_keys_1_and_never_names_the_fence() -> None:
    lib = source("lib.lua")
    assert re.search(r"local base = KEYS\[1\]\n", lib)
    assert re.search(r"local function key\(kind, name\) return base \.\. ':' \.\. kind \.\. ':' \.\. name end", lib)
    assert re.search(r"local HOLDS = base \.\. ':holds'\n", lib)
    assert re.search(r"local APPROVALS = base \.\. ':approvals'\n", lib)
    for name in FILES:
        text = source(name)
        # Only KEYS[1] is read: the second declared key (the fence) is never touched.
        assert set(re.findall(r"KEYS\[(\d+)\]", text)) <= ({"1"} if name == "lib.lua" else set()), name
        assert "fence" not in text, name
        # base is used to build keys (lib.lua) and to read the token id back out of it, never as a key itself.
        for m in re.finditer(r"\bbase\b", text):
            line = text[text.rfind("\n", 0, m.start()) + 1 : text.find("\n", m.end())]
            assert "redis." not in line, f"{name}: base used directly in {line.strip()!r}"
    # key(kind, name) always has two more segments, HOLDS and APPROVALS end in their names: none is `base:fence`.
    kinds = {k for name in FILES for k in re.findall(r"key\('(\w+)'", source(name))}
    assert kinds and "fence" not in kinds
