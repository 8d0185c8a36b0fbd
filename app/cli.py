"""`agentcaps`: serve | mint | attenuate | inspect | verify | settle | release | extend | revoke | approvals |
approve | deny | audit | keys | gateway.

One small function per subcommand, registered in COMMANDS with its arguments. `attenuate` and `inspect` work
offline; the others speak to the service (AGENTCAPS_URL, else http://HOST:PORT) and find the local admin key in
the data dir by themselves. Exit codes: 0 done (or allowed), 1 failed, 2 bad input (and a `serve` that cannot
start: a setting refused, a port in use), 3 denied (`verify`, and `inspect` of a token that denies every call).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec

from app.config import ADMIN_KEY_FILE, MASTER_KEYS_FILE, Settings, load_or_create_ring, save_ring
from app.errors import AgentcapsError, ApiError, ConfigError, TokenError, UsageError
from app.schemas import Allowed, ApprovalView, HoldResponse
from app.sdk.client import Client, audit_query
from app.sdk.token import Token
from app.token.keys import KeyRing, new_key_entry
from caveats.grammar import CaveatSyntaxError
from caveats.money import AMOUNT_RE, parse_money

EXIT_FAILED, EXIT_USAGE, EXIT_DENIED = 1, 2, 3


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


def _money(flag: str, text: str | None, example: str = "10.00 USD") -> str | None:
    """An amount flag, checked here so that a typo is named before any network call."""
    if text is None:
        return None
    try:
        parse_money(text.strip())
    except CaveatSyntaxError:
        raise UsageError(
            f'{flag} must look like "{example}" (an amount, a space, a currency code), got {text!r}'
        ) from None
    return text.strip()


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [n for n in text.split(",") if n]


def _restrictions(args: argparse.Namespace) -> dict[str, Any]:
    """The restriction flags shared by mint and attenuate, as keyword arguments."""
    return {
        "budget": _money("--budget", args.budget),
        "cost_cap": _money("--cost-cap", args.cost_cap, "0.50 USD"),
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
@contextmanager
def _extra(name: str, command: str) -> Iterator[None]:
    """An import of the package's optional part `name`: missing, it is one line that says what to install."""
    try:
        yield
    except ModuleNotFoundError as e:
        if (e.name or "").partition(".")[0] not in EXTRAS[name]:
            raise
        missing = f"{command} needs agentcaps[{name}] ({e.name} is not installed)"
        raise UsageError(f"{missing}: pip install 'agentcaps[{name}]'") from None


EXTRAS = {  # the top-level modules each optional part of pyproject.toml brings
    "server": {"litestar", "uvicorn", "redis", "hiredis", "prometheus_client"},
    "mcp": {"mcp", "mcp_types", "pydantic", "starlette"},
}


def cmd_serve(args: argparse.Namespace) -> int:
    with _extra("server", "agentcaps serve"):
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
    if args.budget is None and args.expires_in is None and args.expires_at is None:
        print(
            "warning: this token has no budget and never expires: it allows unlimited spend until revoked "
            "(add --budget and --expires-in to bound it)",
            file=sys.stderr,
        )
    with Client(_url(args), admin_key=_admin_key(args)) as client:
        minted = client.mint(args.subject, **_restrictions(args))
    _out(args, minted, minted.token)
    return 0


# `amount<=3`, `amount <= 3`, `currency in usd,eur`, and the older `amount=<= 3`: PATH, OP, VALUE.
_ARG_RE = re.compile(
    r"\s*(?P<path>[A-Za-z0-9_.-]+?)\s*(?:=\s*(?=[<>!=]|in\s))?"
    r"(?P<op><=|>=|!=|<|>|=|(?<=[\s=])in(?=\s))\s*(?P<value>\S.*?)\s*"
)


def _arg_conditions(items: list[str] | None) -> dict[str, str] | None:
    conditions = {}
    for item in items or []:
        m = _ARG_RE.fullmatch(item)
        if m is None:
            raise UsageError(f"--arg must look like 'amount<=3' or 'currency in usd,eur', got {item!r}")
        conditions[m["path"]] = f"{m['op']} {m['value']}"
    return conditions or None


def cmd_attenuate(args: argparse.Namespace) -> int:
    token = Token.parse(_read_token(args.token))
    child = token.attenuate(
        to=args.to,
        args=_arg_conditions(args.arg),
        approval_tools=_names(args.approval_tools),
        approval_above=_money("--approval-above", args.approval_above, "1.00 USD"),
        **_restrictions(args),
    )
    asked = args.expires_at or (args.expires_in is not None and time.time() + args.expires_in)
    inherited = token.limits.expires_at
    if asked and inherited and child.limits.expires_at == inherited and args.expires_at != inherited:
        # A child never outlives its parent: say which expiry holds, so nobody counts on the longer one.
        print(f"note: the token expires at {inherited}, its parent's expiry, sooner than asked", file=sys.stderr)
    _out(args, {"token": str(child), "caveats": child.caveats}, str(child))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    token = Token.parse(_read_token(args.token))
    denies = token.denies_every_call()  # expired, or a caveat that does not parse: exit 3, like a denied verify
    view = {
        "token_id": token.token_id,
        "key_id": token.key_id,
        "location": token.location,
        "holder": token.holder,
        "delegation": token.delegation,
        "hops": token.hops,
        "limits": token.limits,
        "verified": False,
        "denies": denies,
    }
    text = _tree(token) + (f"\nDENIES EVERY CALL: {denies}" if denies else "")
    _out(args, view, text)
    return EXIT_DENIED if denies else 0


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        call_args = json.loads(args.args, parse_float=Decimal) if args.args else None  # exact, never float
    except json.JSONDecodeError as e:
        raise UsageError(f"--args must be a JSON object: {e}") from None
    if call_args is not None and not isinstance(call_args, dict):
        raise UsageError("--args must be a JSON object, like '{\"amount\": 3}'")
    if not (math.isfinite(args.wait) and 0 <= args.wait <= 60):
        raise UsageError(f"--wait must be 0 to 60 seconds, got {args.wait}")
    with Client(_url(args), verifier_key=args.verifier_key) as client:
        decision = client.verify(
            _read_token(args.token),
            args.tool,
            cost=_money("--cost", args.cost, "0.05 USD"),
            args=call_args,
            audience=args.audience,
            request_id=args.request_id,
            mode="hold" if args.hold else "charge",
            hold_ttl=args.hold_ttl,
            wait=args.wait,
        )
    if isinstance(decision, Allowed):
        text = f"allowed for {decision.holder}" + _spent(decision, args.cost)
    else:
        text = f"denied {decision.code}: {decision.reason}"
        if decision.code == "approval_required" and decision.approval is not None:
            # The command to run, with the id filled in: the reason says what an approval is, not how to give one.
            text += (
                f"\nto run it: agentcaps approve {decision.approval.id} --token DELEGATOR_TOKEN (or with the admin "
                "key), then this same verify again"
            )
    _out(args, decision, text)
    return 0 if isinstance(decision, Allowed) else EXIT_DENIED


def _spent(allowed: Allowed, cost: str | None) -> str:
    """`: charged 0.05 USD; remaining: hop 0 (orchestrator) 9.95 of 10.00 USD, ...` (or held, with the hold id)."""
    parts = []
    if allowed.charged is not None:
        parts.append(f"charged {allowed.charged.amount} {allowed.charged.currency}")
    if allowed.hold_id:
        parts.append((f"held {cost}; " if cost else "") + f"hold {allowed.hold_id}")
    if allowed.budgets:
        left = [
            f"hop {b.hop} ({allowed.delegation[b.hop] if b.hop < len(allowed.delegation) else '?'}) "
            f"{b.remaining} of {b.limit} {b.currency}"
            for b in allowed.budgets
        ]
        parts.append("remaining: " + ", ".join(left))
    return (": " + "; ".join(parts)) if parts else ""


def cmd_revoke(args: argparse.Namespace) -> int:
    if args.chain is not None and args.token_id is None:
        raise UsageError("--chain names a chain under a root: give its root's --token-id too")
    if (args.token is None) == (args.token_id is None):
        raise UsageError("give a token, or --token-id with the admin key")
    admin = _admin_key(args) if args.token_id else None
    with Client(_url(args), admin_key=admin) as client:
        token = _read_token(args.token) if args.token else None
        done = client.revoke(token, token_id=args.token_id, chain=args.chain)
    if args.token:
        parsed = Token.parse(token) if token and args.token != "-" else None
        who = f"the token held by {parsed.holder} ({' > '.join(parsed.delegation)})" if parsed else "the token"
        text = f"revoked {who} and every token derived from it; its ancestors and siblings still work"
    elif args.chain:
        text = f"revoked chain {args.chain} of root {done.token_id} and every token derived from it"
    else:
        text = f"revoked the whole root {done.token_id} and every token derived from it"
    _out(args, done, text)
    return 0


def _hold_text(hold: HoldResponse) -> str:
    amount = f" {hold.amount} {hold.currency}" if hold.amount is not None else ""
    until = f" until {hold.expires_at}" if hold.expires_at else ""
    return f"hold {hold.hold_id} {hold.state}{amount}{until}"


def cmd_settle(args: argparse.Namespace) -> int:
    amount = None
    if args.amount is not None:
        amount = args.amount.strip()
        if not AMOUNT_RE.fullmatch(amount):
            raise UsageError(f"AMOUNT must be a decimal like 0.05, in the hold's currency, got {args.amount!r}")
    with Client(_url(args), verifier_key=args.verifier_key) as client:
        done = client.settle(args.hold_id, amount)
    _out(args, done, _hold_text(done))
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    with Client(_url(args), verifier_key=args.verifier_key) as client:
        done = client.release(args.hold_id)
    _out(args, done, _hold_text(done))
    return 0


def cmd_extend(args: argparse.Namespace) -> int:
    if not 1 <= args.ttl <= 86400:
        raise UsageError(f"TTL must be 1 to 86400 seconds, got {args.ttl}")
    with Client(_url(args), verifier_key=args.verifier_key) as client:
        done = client.extend(args.hold_id, args.ttl)
    _out(args, done, _hold_text(done))
    return 0


def _credential(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """What approval and audit commands present, (admin key, token), one of them: --token (a token of the tree:
    what it may decide or read), else the admin key."""
    if args.token is not None and args.admin_key:
        raise UsageError("give --admin-key or --token, not both")
    if args.token is not None:
        return None, _read_token(args.token)
    try:
        return _admin_key(args), None
    except UsageError as e:
        raise UsageError(f"{e}; or pass --token with a token of the tree") from None


def _approver(args: argparse.Namespace) -> Client:
    admin_key, token = _credential(args)
    return Client(_url(args), admin_key=admin_key, token=token)


def _approval_text(approval: ApprovalView) -> str:
    """`ID pending: pay {"to": "acme"} costing 2.00 USD by buyer (orchestrator > buyer), expires ...`."""
    cost = f" costing {approval.cost.amount} {approval.cost.currency}" if approval.cost else ""
    who = f"{approval.holder or '?'} ({' > '.join(approval.delegation)})"
    text = f"{approval.id} {approval.state}: {approval.tool} {json.dumps(approval.args)}{cost} by {who}"
    if approval.decided_by:
        text += f", decided by {approval.decided_by}"
    if approval.reason:
        text += f" ({approval.reason})"
    return text + f", expires {approval.expires_at}"


def cmd_approvals(args: argparse.Namespace) -> int:
    with _approver(args) as client:
        found = client.approvals(state=args.state)
    text = "\n".join(_approval_text(a) for a in found) or (
        f"no {args.state} approvals" if args.state else "no approvals"
    )
    _out(args, {"approvals": found}, text)
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    with _approver(args) as client:
        done = client.approve(args.approval_id, args.reason)
    _out(args, done, _approval_text(done) + "\nthe same call, retried (or still waiting), now runs once")
    return 0


def cmd_deny(args: argparse.Namespace) -> int:
    with _approver(args) as client:
        done = client.deny(args.approval_id, args.reason)
    _out(args, done, _approval_text(done))
    return 0


# -- audit --------------------------------------------------------------------------------------------------
STREAM_TIMEOUT = httpx.Timeout(10.0, read=60.0)  # the service sends a keep-alive every 15 s: 60 s of silence is a drop
SAVE_EVERY = 1000  # events between two cursor saves in a long backlog (and at each `: caught up`)
FIRST_PAUSE, MAX_PAUSE = 1.0, 30.0  # seconds before a --follow reconnects: doubling, reset by a working stream
# An event id as the service gives them out (`00000000000000000042`, `1764763200000-0.<token id>`): digits first.
CURSOR_RE = re.compile(r"[0-9][0-9A-Za-z.:-]{0,127}")
FROM_THE_OLDEST = "0"  # an id before every id a store gives out: the stream resumes from the oldest event kept


def _audit_filters(args: argparse.Namespace) -> dict[str, Any]:
    """The filters the page and the stream share, as Client.audit's arguments; checked here so that a typo is named
    before any network call."""
    if args.allowed not in (None, "true", "false"):
        raise UsageError(f"--allowed must be true or false, got {args.allowed!r}")
    return {
        "token_id": args.token_id,
        "chain": args.chain,
        "tool": args.tool,
        "allowed": None if args.allowed is None else args.allowed == "true",
        "kind": args.kind,
    }


def _print_event(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()  # a tail or a shipper reading the pipe sees each event as it comes


def _read_cursor(path: Path) -> str | None:
    """The id the last run stopped at; None when there is none yet (no file, or an empty one)."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    if text and not CURSOR_RE.fullmatch(text):
        # Guessing would resend or skip events: the operator decides (delete the file to start from the oldest).
        raise UsageError(f"--cursor-file {path} does not hold an event id (got {text[:40]!r}); fix or remove it")
    return text or None


def _save_cursor(path: Path, event_id: str) -> None:
    """Written whole or not at all: a crash leaves the previous id, never half of one."""
    fd, temp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(event_id + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class _Shipper:
    """Prints the stream's events and remembers the last one printed (in the cursor file, if any), always after
    printing: a crash between the two resends one event, never loses one."""

    def __init__(self, cursor_file: Path | None, last: str | None) -> None:
        self.cursor_file = cursor_file
        self.last = last
        self.saved = last
        self.unsaved = 0

    def event(self, event_id: str, data: str) -> None:
        _print_event(data)
        self.last, self.unsaved = event_id, self.unsaved + 1
        if self.unsaved >= SAVE_EVERY:
            self.save()

    def save(self) -> None:
        if self.cursor_file is not None and self.last is not None and self.last != self.saved:
            _save_cursor(self.cursor_file, self.last)
            self.saved = self.last
        self.unsaved = 0


def _read_stream(http: httpx.Client, url: str, headers: dict[str, str], shipper: _Shipper, follow: bool) -> bool:
    """One connection to the stream, from the shipper's last id. True when it stopped at `: caught up` (without
    --follow); False when the service ended the stream (a store that stopped answering says so first)."""
    resume = {"last-event-id": shipper.last} if shipper.last else {}
    with http.stream("GET", url, headers={**headers, **resume}, timeout=STREAM_TIMEOUT) as response:
        if response.status_code != 200:
            response.read()
            raise _http_error(response)
        event_id, data = None, None
        for line in response.iter_lines():
            if line == "":  # the blank line that ends an event
                if event_id is not None and data is not None:
                    shipper.event(event_id, data)
                event_id, data = None, None
            elif line.startswith("id:"):
                event_id = line[3:].removeprefix(" ")
            elif line.startswith("data:"):
                data = line[5:].removeprefix(" ")
            elif line == ": caught up":
                shipper.save()
                if not follow:
                    return True
            elif line.startswith(": the store is unavailable"):
                print(f"agentcaps audit: the service said{line[1:]}", file=sys.stderr)
    shipper.save()
    return False


def _http_error(response: httpx.Response) -> ApiError:
    """The stream's refusal (a bad filter, a rejected credential) in the words the service used."""
    try:
        body = response.json()
        return ApiError(response.status_code, body["code"], body["reason"], body.get("field"))
    except (ValueError, KeyError, TypeError):
        return ApiError(response.status_code, "http_error", response.text[:200] or response.reason_phrase)


def _stream_audit(args: argparse.Namespace, filters: dict[str, Any]) -> int:
    cursor_file = Path(args.cursor_file) if args.cursor_file else None
    # A first run ships every event still kept; --follow alone starts from now.
    start = (_read_cursor(cursor_file) or FROM_THE_OLDEST) if cursor_file is not None else None
    admin_key, token = _credential(args)
    headers = {"authorization": f"Bearer {admin_key or token}"}
    url = _url(args).rstrip("/") + "/v1/audit/stream" + audit_query(**filters)
    shipper = _Shipper(cursor_file, start)
    pause: float | None = None
    with httpx.Client(timeout=STREAM_TIMEOUT) as http:
        try:
            while True:
                seen = shipper.last
                try:
                    if _read_stream(http, url, headers, shipper, args.follow):
                        return 0
                    why = "the service ended the stream"
                except (httpx.TransportError, ApiError) as e:
                    if isinstance(e, ApiError) and e.status < 500:
                        raise  # a refusal: reconnecting would be refused again
                    why = str(e) or type(e).__name__
                if not args.follow:
                    # The cursor holds what was printed: the next run resumes there.
                    print(f"agentcaps audit: {why}; the next run resumes after {shipper.last}", file=sys.stderr)
                    return EXIT_FAILED
                # 1 s after a stream that printed something, doubling while nothing comes through
                pause = FIRST_PAUSE if pause is None or shipper.last != seen else min(pause * 2, MAX_PAUSE)
                after = f" after {shipper.last}" if shipper.last else ""
                print(f"agentcaps audit: {why}; reconnecting in {pause:.0f} s{after}", file=sys.stderr)
                time.sleep(pause)
        finally:
            shipper.save()


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)  # unwinds through the shipper's last save, as Ctrl-C does


def cmd_audit(args: argparse.Namespace) -> int:
    filters = _audit_filters(args)
    if args.limit is not None and not 1 <= args.limit <= 1000:
        raise UsageError(f"--limit must be 1 to 1000, got {args.limit}")
    if not (args.follow or args.cursor_file):
        with _approver(args) as client:
            page = client.audit(**filters, since=args.since, until=args.until, limit=args.limit)
        for event in reversed(page["events"]):  # oldest first: the order a log is read in
            _print_event(msgspec.json.encode(event).decode())
        if page.get("next"):
            print(
                f"agentcaps audit: older events than these remain (up to {args.limit or 100} are shown: raise "
                "--limit, narrow with --since, or ship them all with --cursor-file)",
                file=sys.stderr,
            )
        return 0
    for flag, value in (("--limit", args.limit), ("--since", args.since), ("--until", args.until)):
        if value is not None:
            raise UsageError(f"{flag} picks one page: it does not go with --follow or --cursor-file")
    on_main_thread = threading.current_thread() is threading.main_thread()  # where signal handlers can be set
    before = signal.signal(signal.SIGTERM, _stop_on_sigterm) if on_main_thread else None
    try:
        return _stream_audit(args, filters)
    except KeyboardInterrupt:
        return 0
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, before)


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
    # Attenuate only, like --arg: the mint request has no approval field; a root takes --caveat 'approval in pay'.
    p.add_argument(
        "--approval-tools",
        metavar="TOOLS",
        help="comma-separated tools whose calls wait for a human's approval; a trailing * matches a prefix",
    )
    p.add_argument(
        "--approval-above",
        metavar="AMOUNT",
        help='calls costing more than this, or costed in another currency, wait for approval; e.g. "1.00 USD"',
    )


def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("token", help="the token to show ('-' reads stdin)")


def _verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("token", help="the token presented ('-' reads stdin)")
    p.add_argument("--tool", required=True, help="the tool the call is for, e.g. search")
    p.add_argument("--cost", help='what the call costs, e.g. "0.05 USD"; charged to every budget in the chain')
    p.add_argument("--args", help="the call's arguments as a JSON object, checked by arg.* caveats")
    p.add_argument("--audience", help="the tool server asking (with verifier keys, the key's name is used)")
    p.add_argument("--request-id", help="makes the call idempotent: the same id again replays the first decision")
    p.add_argument("--hold", action="store_true", help="reserve the cost instead of charging it")
    p.add_argument("--hold-ttl", type=int, default=300, metavar="SECONDS", help="with --hold: until it is released")
    p.add_argument(
        "--wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="0 to 60: a call that needs approval waits this long for the decision (default 0: answer at once)",
    )
    _verifier_key_flag(p)
    _service_flags(p)


def _verifier_key_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--verifier-key",
        default=os.environ.get("AGENTCAPS_VERIFIER_KEY"),
        help="when the service has verifier keys (default AGENTCAPS_VERIFIER_KEY)",
    )


def _hold_args(p: argparse.ArgumentParser, *extra: tuple[str, dict[str, Any]]) -> None:
    p.add_argument("hold_id", metavar="HOLD_ID", help="the hold id that verify --hold printed")
    for name, options in extra:
        p.add_argument(name, **options)
    _verifier_key_flag(p)
    _service_flags(p)


def _settle_args(p: argparse.ArgumentParser) -> None:
    amount = {"nargs": "?", "metavar": "AMOUNT", "help": "the final cost, at most what is held (default: all of it)"}
    _hold_args(p, ("amount", amount))


def _release_args(p: argparse.ArgumentParser) -> None:
    _hold_args(p)


def _extend_args(p: argparse.ArgumentParser) -> None:
    _hold_args(p, ("ttl", {"type": int, "metavar": "TTL", "help": "seconds from now until it is released by itself"}))


def _revoke_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("token", nargs="?", help="revoke this token and everything derived from it")
    p.add_argument("--token-id", help="revoke a whole root (needs the admin key)")
    p.add_argument("--chain", help="with --token-id: revoke only this chain (an id from agentcaps audit) and below")
    _service_flags(p, admin=True)


def _approver_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--token", help="decide as a delegator, with its own token ('-' reads stdin); else the admin key")
    _service_flags(p, admin=True)


def _approvals_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", choices=["pending", "approved", "denied", "used", "expired"], help="only these")
    _approver_flags(p)


def _decide_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("approval_id", metavar="ID", help="the approval id a denied call named (agentcaps approvals)")
    p.add_argument("--reason", help="said to the caller (with deny, in its denial), up to 1024 characters")
    _approver_flags(p)


def _audit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--token-id", help="only this root's events")
    p.add_argument("--chain", help="only this chain's events")
    p.add_argument("--tool", help="only calls of this tool")
    p.add_argument("--allowed", metavar="true|false", help="only allowed, or only denied, decisions")
    p.add_argument("--kind", choices=["verify", "settle", "release", "expire", "extend", "approval", "revoke", "mint"])
    p.add_argument("--since", metavar="RFC3339", help="one page: events at or after this instant")
    p.add_argument("--until", metavar="RFC3339", help="one page: events at or before this instant")
    p.add_argument("--limit", type=int, help="one page: at most this many events, 1 to 1000 (default 100)")
    p.add_argument("--follow", action="store_true", help="keep printing events as they happen (reconnects)")
    p.add_argument(
        "--cursor-file",
        metavar="FILE",
        help="resume after the id in FILE (none: from the oldest event kept), print up to now, save the last id",
    )
    p.add_argument("--token", help="read as this token: its own chain's events and below ('-' reads stdin)")
    _service_flags(p, admin=True)


def _gateway_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "gateway_args",
        nargs=argparse.REMAINDER,
        help="--upstream CMD | --upstream-url URL [--costs FILE] [--verifier URL] [--verifier-key KEY] "
        "[--audience NAME] [--token TOKEN] [--hold-ttl SECONDS] [--approval-wait SECONDS] "
        "[--listen HOST:PORT [--max-agents N]] [--list-tools]",
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
    "settle": (cmd_settle, "charge a hold's final amount and release the rest", _settle_args),
    "release": (cmd_release, "release a hold: nothing is charged", _release_args),
    "extend": (cmd_extend, "keep a hold TTL more seconds from now (a tool that runs long)", _extend_args),
    "revoke": (cmd_revoke, "revoke a token and its descendants, or a whole root", _revoke_args),
    "approvals": (cmd_approvals, "list the approvals the admin key or a delegator's token may decide", _approvals_args),
    "approve": (cmd_approve, "approve a call waiting for approval: it runs once", _decide_args),
    "deny": (cmd_deny, "deny a call waiting for approval, with a reason", _decide_args),
    "audit": (cmd_audit, "print the audit log as JSON lines, oldest first; --follow, --cursor-file", _audit_args),
    "keys": (cmd_keys, "master keys: generate or rotate", _keys_args),
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="agentcaps",
        description="agentcaps: capability tokens for AI agents that delegate. COMMAND --help says more.",
    )
    sub = top.add_subparsers(dest="command", required=True)
    for name, (_, help_text, add_args) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.add_argument("--json", action="store_true", help="machine-readable output")
    # Listed for --help and for the 'invalid choice' message; main() hands `gateway ...` to its own parser.
    sub.add_parser("gateway", help="the MCP gateway in front of a server you do not own (gateway --help)")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["gateway"]:
        # The MCP gateway has its own parser and the heavy MCP SDK: loaded only when asked for.
        try:
            with _extra("mcp", "agentcaps gateway"):
                from app.mcp.gateway import main as gateway
        except UsageError as e:
            print(f"agentcaps: {e}", file=sys.stderr)
            return EXIT_USAGE
        return gateway(argv[1:])
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command][0](args)
    except (UsageError, TokenError, ConfigError, ValueError) as e:  # ValueError: an input the SDK refused to send
        print(f"agentcaps {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ApiError as e:
        print(f"agentcaps {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE if e.status in (400, 401, 403, 404, 409, 413) else EXIT_FAILED
    except httpx.TransportError as e:  # nothing answered: say where we looked and how to fix it
        why = type(e).__name__ if not str(e) else str(e)
        print(
            f"agentcaps {args.command}: cannot reach the agentcaps service at {_url(args)} ({why}). "
            "Start it with `agentcaps serve` (scripts/run in a checkout), or point --url or AGENTCAPS_URL at it.",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except (AgentcapsError, OSError) as e:
        print(f"agentcaps {args.command}: {e}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as e:  # httpx transport errors and the like: one line, never a traceback
        print(f"agentcaps {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
