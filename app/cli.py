"""`agentcaps`: serve | mint | attenuate | inspect | verify | revoke | keys | gateway.

One small function per subcommand, registered in COMMANDS with its arguments. `attenuate` and `inspect` work
offline; `mint`, `verify` and `revoke` speak to the service (AGENTCAPS_URL, else http://HOST:PORT) and find the
local admin key in the data dir by themselves. Exit codes: 0 done (or allowed), 1 failed, 2 bad input,
3 denied (`verify`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from app.api.schemas import Allowed
from app.config import ADMIN_KEY_FILE, MASTER_KEYS_FILE, Settings, load_or_create_ring, save_ring
from app.errors import AgentcapsError, ConfigError
from app.sdk.client import ApiError, Client
from app.sdk.token import Token, TokenError
from app.token.keys import KeyRing, new_key_entry

EXIT_FAILED, EXIT_USAGE, EXIT_DENIED = 1, 2, 3


class UsageError(Exception):
    pass


def _out(args: argparse.Namespace, value: Any, text: str) -> None:
    print(msgspec.json.encode(value).decode() if args.json else text)


def _read_token(value: str) -> str:
    return sys.stdin.read().strip() if value == "-" else value.strip()


def _data_dir() -> Path:
    return Path(os.environ.get("AGENTCAPS_DATA_DIR", ".agentcaps"))


def _url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url)
    if os.environ.get("AGENTCAPS_URL"):
        return os.environ["AGENTCAPS_URL"]
    return f"http://{os.environ.get('AGENTCAPS_HOST', '127.0.0.1')}:{os.environ.get('AGENTCAPS_PORT', '8470')}"


def _admin_key(args: argparse.Namespace) -> str:
    """--admin-key, else the first of AGENTCAPS_ADMIN_KEYS, else the key `serve` generated in the data dir."""
    if args.admin_key:
        return str(args.admin_key)
    configured = [k for k in os.environ.get("AGENTCAPS_ADMIN_KEYS", "").split(",") if k]
    if configured:
        return configured[0]
    path = _data_dir() / ADMIN_KEY_FILE
    if path.exists():
        return path.read_text().strip()
    raise UsageError(f"no admin key: pass --admin-key, set AGENTCAPS_ADMIN_KEYS, or run where {path} exists")


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [n for n in text.split(",") if n]


def _restrictions(args: argparse.Namespace) -> dict[str, Any]:
    """The restriction flags shared by mint and attenuate, as keyword arguments."""
    return {
        "budget": args.budget,
        "cost_cap": args.cost_cap,
        "tools": _names(args.tools),
        "audience": _names(args.audience),
        "expires_in": args.expires_in,
        "expires_at": args.expires_at,
        "max_depth": args.max_depth,
        "rate": args.rate,
        "caveats": args.caveat or None,
    }


def _tree(token: Token) -> str:
    lines = [f"token {token.token_id} (key {token.key_id}, unverified), holder {token.holder}"]
    for hop in token.hops:
        lines.append(f"  hop {hop.hop}: {hop.agent or '(no delegate)'}")
        lines += [f"    {text}" for text in hop.caveats]
    limits = msgspec.to_builtins(token.limits)
    lines.append("effective limits: " + (json.dumps(limits) if limits else "none"))
    return "\n".join(lines)


# -- commands ---------------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from app.api.server import serve  # the server's imports are heavy; offline commands do not need them

    overrides: dict[str, Any] = {}
    if args.host:
        os.environ["AGENTCAPS_HOST"] = overrides["host"] = args.host
    if args.port:
        os.environ["AGENTCAPS_PORT"] = str(args.port)
        overrides["port"] = args.port
    serve(Settings.from_env(**overrides), args.workers)
    return 0


def cmd_mint(args: argparse.Namespace) -> int:
    with Client(_url(args), admin_key=_admin_key(args)) as client:
        minted = client.mint(args.subject, **_restrictions(args))
    _out(args, minted, minted.token)
    return 0


def cmd_attenuate(args: argparse.Namespace) -> int:
    conditions = {}
    for item in args.arg or []:
        path, sep, condition = item.partition("=")
        if not sep:
            raise UsageError(f"--arg needs PATH=OP VALUE, like 'amount=<= 3', got {item!r}")
        conditions[path] = condition
    token = Token.parse(_read_token(args.token))
    child = token.attenuate(to=args.to, args=conditions or None, **_restrictions(args))
    _out(args, {"token": str(child), "caveats": child.caveats}, str(child))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    token = Token.parse(_read_token(args.token))
    view = {
        "token_id": token.token_id,
        "key_id": token.key_id,
        "location": token.location,
        "holder": token.holder,
        "delegation": token.delegation,
        "hops": token.hops,
        "limits": token.limits,
        "verified": False,
    }
    _out(args, view, _tree(token))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        call_args = json.loads(args.args, parse_float=Decimal) if args.args else None  # exact, never float
    except json.JSONDecodeError as e:
        raise UsageError(f"--args must be a JSON object: {e}") from None
    if call_args is not None and not isinstance(call_args, dict):
        raise UsageError("--args must be a JSON object, like '{\"amount\": 3}'")
    with Client(_url(args), verifier_key=args.verifier_key) as client:
        decision = client.verify(
            _read_token(args.token),
            args.tool,
            cost=args.cost,
            args=call_args,
            audience=args.audience,
            request_id=args.request_id,
            mode="hold" if args.hold else "charge",
            hold_ttl=args.hold_ttl,
        )
    if isinstance(decision, Allowed):
        text = f"allowed for {decision.holder}" + (f", hold {decision.hold_id}" if decision.hold_id else "")
    else:
        text = f"denied {decision.code}: {decision.reason}"
    _out(args, decision, text)
    return 0 if isinstance(decision, Allowed) else EXIT_DENIED


def cmd_revoke(args: argparse.Namespace) -> int:
    if (args.token is None) == (args.token_id is None):
        raise UsageError("give a token, or --token-id with the admin key")
    admin = _admin_key(args) if args.token_id else None
    with Client(_url(args), admin_key=admin) as client:
        done = client.revoke(_read_token(args.token) if args.token else None, token_id=args.token_id)
    _out(args, done, f"revoked {done.token_id}" + ("" if args.token else " (the whole root)"))
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    if args.action == "generate":
        print(KeyRing(new_key_entry()).serialize())  # a kid:key entry for AGENTCAPS_MASTER_KEYS
        return 0
    if os.environ.get("AGENTCAPS_MASTER_KEYS"):
        raise UsageError("AGENTCAPS_MASTER_KEYS is set: rotate by putting a new `keys generate` entry first in it")
    data_dir = _data_dir()
    ring = load_or_create_ring(data_dir).rotated()
    save_ring(data_dir, ring)
    print(
        f"new signing key {ring.signing_kid} in {data_dir / MASTER_KEYS_FILE}; {len(ring.keys) - 1} older key(s) "
        "still verify. Restart serve to use it."
    )
    return 0


# -- parser -----------------------------------------------------------------------------------------------
def _restriction_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", help='total spend, e.g. "10.00 USD"')
    p.add_argument("--cost-cap", help='most one call may cost, e.g. "0.50 USD"')
    p.add_argument("--tools", help="comma-separated tool names; a trailing * matches a prefix")
    p.add_argument("--audience", help="comma-separated tool servers allowed to verify it")
    p.add_argument("--expires-in", type=int, metavar="SECONDS")
    p.add_argument("--expires-at", metavar="RFC3339", help="e.g. 2026-12-01T00:00:00Z")
    p.add_argument("--max-depth", type=int, help="how many further delegations may follow")
    p.add_argument("--rate", help="e.g. 100/1h")
    p.add_argument("--caveat", action="append", help="a raw caveat, repeatable")


def _service_flags(p: argparse.ArgumentParser, admin: bool = False) -> None:
    p.add_argument("--url", help="the service (default AGENTCAPS_URL, else http://HOST:PORT)")
    if admin:
        p.add_argument("--admin-key", help="default: AGENTCAPS_ADMIN_KEYS, else <data dir>/admin_key")


Command = tuple[Callable[[argparse.Namespace], int], str, Callable[[argparse.ArgumentParser], None]]


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="default AGENTCAPS_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, help="default AGENTCAPS_PORT or 8470")
    p.add_argument("--workers", type=int, default=1, help="processes; more than 1 needs a Redis store")


def _mint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--subject", required=True, help="the agent the root token is for")
    _restriction_flags(p)
    _service_flags(p, admin=True)


def _attenuate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("token", help="the token to narrow ('-' reads stdin)")
    p.add_argument("--to", help="the agent it is handed to (recorded as `delegate = <to>` first)")
    _restriction_flags(p)
    p.add_argument("--arg", action="append", metavar="PATH=OP VALUE", help="e.g. 'amount=<= 3', repeatable")


def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("token", help="the token to show ('-' reads stdin)")


def _verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("token", help="the token presented ('-' reads stdin)")
    p.add_argument("--tool", required=True)
    p.add_argument("--cost", help='e.g. "0.05 USD"')
    p.add_argument("--args", help="the call's arguments as a JSON object")
    p.add_argument("--audience")
    p.add_argument("--request-id")
    p.add_argument("--hold", action="store_true", help="reserve the cost instead of charging it")
    p.add_argument("--hold-ttl", type=int, default=300, metavar="SECONDS")
    p.add_argument("--verifier-key", default=os.environ.get("AGENTCAPS_VERIFIER_KEY"))
    _service_flags(p)


def _revoke_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("token", nargs="?", help="revoke this token and everything derived from it")
    p.add_argument("--token-id", help="revoke a whole root (needs the admin key)")
    _service_flags(p, admin=True)


def _gateway_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "gateway_args",
        nargs=argparse.REMAINDER,
        help="--upstream CMD | --upstream-url URL [--costs FILE] [--verifier URL] [--verifier-key KEY] "
        "[--audience NAME] [--token TOKEN] [--hold-ttl SECONDS] [--listen HOST:PORT [--max-agents N]]",
    )


def _keys_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action",
        choices=["generate", "rotate"],
        help="generate: print a new kid:key entry; rotate: a new signing key in the data dir",
    )


COMMANDS: dict[str, Command] = {
    "serve": (cmd_serve, "run the service", _serve_args),
    "mint": (cmd_mint, "mint a root token (admin)", _mint_args),
    "attenuate": (cmd_attenuate, "narrow a token offline and print the new one", _attenuate_args),
    "inspect": (cmd_inspect, "show a token's hops, caveats and limits offline", _inspect_args),
    "verify": (cmd_verify, "ask the service to decide one tool call", _verify_args),
    "revoke": (cmd_revoke, "revoke a token and its descendants, or a whole root", _revoke_args),
    "keys": (cmd_keys, "master keys: generate or rotate", _keys_args),
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="agentcaps",
        description=__doc__.splitlines()[0] if __doc__ else None,
        epilog="agentcaps gateway --help: the MCP gateway that guards a server you do not own",
    )
    sub = top.add_subparsers(dest="command", required=True)
    for name, (_, help_text, add_args) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.add_argument("--json", action="store_true", help="machine-readable output")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["gateway"]:
        # The MCP gateway has its own parser (SPEC 7) and the heavy MCP SDK: loaded only when asked for.
        from app.mcp.gateway import main as gateway

        return gateway(argv[1:])
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command][0](args)
    except (UsageError, TokenError, ConfigError) as e:
        print(f"agentcaps {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ApiError as e:
        print(f"agentcaps {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE if e.status in (400, 401, 403, 404, 409, 413) else EXIT_FAILED
    except (AgentcapsError, OSError) as e:
        print(f"agentcaps {args.command}: {e}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as e:  # httpx transport errors and the like: one line, never a traceback
        print(f"agentcaps {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
