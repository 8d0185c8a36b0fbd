"""Client and AsyncClient: the HTTP API of docs/api.md over httpx, sharing the server's schema Structs.

One request builder (`_Call`) describes every call; the two clients only differ in how they send it.
A denial is a value (`Denied`), not an exception; an exception means the request itself failed.

A 503 (the counter store did not answer for sure) is resent by the clients themselves, with backoff, for up to
`retry_for` seconds: a verify with the request_id the 503 names, so that a decision the store made after all is
replayed, never charged twice; settle, release and extend as they are (they are idempotent).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import time
import typing
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from inspect import Parameter, signature
from typing import Any, Concatenate, Generic, Literal, ParamSpec, TypeVar
from urllib.parse import quote, urlencode

import httpx
import msgspec

from app.errors import ApiError
from app.schemas import (
    Allowed,
    ApprovalList,
    ApprovalView,
    DecideRequest,
    Denied,
    ExtendRequest,
    HoldResponse,
    InspectRequest,
    InspectResponse,
    MintRequest,
    MintResponse,
    Money,
    RevokeRequest,
    RevokeResponse,
    SettleRequest,
    VerifyRequest,
)

T = TypeVar("T")
P = ParamSpec("P")
F = TypeVar("F", bound=Callable[..., Any])
RETRY_FOR = 10.0  # seconds a 503 is resent for: a Redis Cluster failover, 3-9 s (docs/operations.md)
WAIT_MARGIN = 10.0  # seconds a verify's answer may take beyond its `wait`, before the client gives up on it
FIRST_PAUSE, MAX_PAUSE = 0.1, 1.0  # seconds between resends: doubling, jittered, up to the service's Retry-After
# Built once: a call only picks the decoder of its answer.
_encoder = msgspec.json.Encoder(decimal_format="number")
_allowed = msgspec.json.Decoder(Allowed)
_denied = msgspec.json.Decoder(Denied)
_minted = msgspec.json.Decoder(MintResponse)
_held = msgspec.json.Decoder(HoldResponse)
_revoked = msgspec.json.Decoder(RevokeResponse)
_inspected = msgspec.json.Decoder(InspectResponse)
_approval = msgspec.json.Decoder(ApprovalView)
_approval_list = msgspec.json.Decoder(ApprovalList)
_audit_page = msgspec.json.Decoder(dict[str, Any])
# Which of the client's keys a call presents; "approver" is the admin key, else the token (approvals, the audit log).
Credential = Literal["verifier", "admin", "approver"]
ApprovalState = Literal["pending", "approved", "denied", "used", "expired"]
AuditKind = Literal["verify", "settle", "release", "expire", "extend", "approval", "revoke", "mint"]


class _ApprovalsDecoder:
    """The list of `{"approvals": [...]}`: the caller wants the approvals, not their envelope."""

    @staticmethod
    def decode(content: bytes) -> list[ApprovalView]:
        return _approval_list.decode(content).approvals


def as_money(value: Money | str | None) -> Money | None:
    """`"0.05 USD"` or a Money -> Money."""
    if value is None or isinstance(value, Money):
        return value
    amount, _, currency = value.partition(" ")
    return Money(amount, currency)


@dataclass(frozen=True)
class _Call(Generic[T]):
    path: str
    body: bytes | None
    decode: Any  # a msgspec Decoder for the 2xx (and, for verify, 403/429) body
    credential: Credential = "verifier"
    method: Literal["GET", "POST"] = "POST"
    denied: Any = None  # for verify: the decoder of a 403/429 denial, which is a result, not an error
    resend: bool = False  # a 503 is resent: settle, release and extend are idempotent; verify uses its request_id
    verify: VerifyRequest | None = None  # a verify, resent with the request_id its 503 names
    wait: float = 0  # seconds the service may keep the answer open (a verify waiting for an approval)

    def again(self, response: httpx.Response) -> _Call[T] | None:
        """The call to resend after this answer, or None: answer it."""
        if response.status_code != 503 or not self.resend:
            return None
        if self.verify is None:
            return self
        request_id = _texts(response).get("request_id") or self.verify.request_id
        if request_id is None:  # a 503 from something else than the service: the call may have charged, no id
            return None
        if request_id == self.verify.request_id:
            return self
        resent = msgspec.structs.replace(self.verify, request_id=request_id)
        return dataclasses.replace(self, body=_body(resent), verify=resent)

    def result(self, response: httpx.Response) -> T:
        if self.denied is not None and response.status_code in (403, 429):
            denial: T = self.denied.decode(response.content)
            return denial
        if response.status_code < 300:
            value: T = self.decode.decode(response.content)
            return value
        raise _api_error(response)


def _texts(response: httpx.Response) -> dict[str, str]:
    """The string fields of a JSON object body; none if it is not one (a proxy may answer with no JSON at all)."""
    try:
        body = msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        return {}
    return {k: v for k, v in body.items() if isinstance(v, str)} if isinstance(body, dict) else {}


def _api_error(response: httpx.Response) -> ApiError:
    """The refusal as the service worded it. Read leniently: an error body may carry more than ErrorBody's
    fields (a refused revoke answers with a denial, `allowed` and all), and a proxy may answer with no JSON."""
    body = _texts(response)
    if "code" in body and "reason" in body:
        request_id = body.get("request_id") if response.status_code == 503 else None  # a 500's is a log reference
        return ApiError(response.status_code, body["code"], body["reason"], body.get("field"), request_id)
    return ApiError(response.status_code, "http_error", response.text[:200] or response.reason_phrase)


def _pause(resends: int, deadline: float) -> float | None:
    """How long to wait before resending once more, or None if that would pass the deadline. Jittered, so that the
    callers a failover turned away do not all come back in the same instant."""
    pause = min(MAX_PAUSE, FIRST_PAUSE * 2**resends) * random.uniform(0.5, 1.0)
    return pause if time.monotonic() + pause <= deadline else None


def _refuse_non_finite(value: Any, path: str) -> None:
    """JSON has no NaN or Infinity, and the encoder would send them as null, another argument: refuse them."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path}: {value} is not a JSON number")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _refuse_non_finite(v, f"{path}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _refuse_non_finite(v, f"{path}[{i}]")


def _body(value: Any) -> bytes:
    return _encoder.encode(value)


class _Builder:
    """Every API call as data, so the sync and async clients cannot drift apart."""

    @staticmethod
    def mint(
        subject: str,
        *,
        budget: Money | str | None = None,
        tools: Iterable[str] | None = None,
        audience: Iterable[str] | None = None,
        expires_in: int | None = None,
        expires_at: str | None = None,
        max_depth: int | None = None,
        cost_cap: Money | str | None = None,
        rate: str | None = None,
        caveats: Iterable[str] | None = None,
    ) -> _Call[MintResponse]:
        req = MintRequest(
            subject,
            as_money(budget),
            list(tools) if tools is not None else None,
            list(audience) if audience is not None else None,
            expires_in,
            expires_at,
            max_depth,
            as_money(cost_cap),
            rate,
            list(caveats) if caveats is not None else None,
        )
        return _Call("/v1/tokens", _body(req), _minted, "admin")

    @staticmethod
    def verify(
        token: str,
        tool: str,
        *,
        cost: Money | str | None = None,
        args: Mapping[str, Any] | None = None,
        audience: str | None = None,
        request_id: str | None = None,
        mode: Literal["charge", "hold"] = "charge",
        hold_ttl: int = 300,
        wait: float = 0,
    ) -> _Call[Allowed | Denied]:
        """Decide one call. `wait` (0 to 60 seconds): a call that needs a human's approval keeps the answer open
        that long for the decision, and is decided once it comes."""
        if args is not None:
            _refuse_non_finite(args, "args")
        if not (isinstance(wait, int | float) and 0 <= wait <= 60):  # NaN fails this too
            raise ValueError(f"wait must be 0 to 60 seconds, got {wait!r}")
        req = VerifyRequest(
            str(token),
            tool,
            dict(args) if args is not None else None,
            audience,
            as_money(cost),
            request_id,
            mode,
            hold_ttl,
            wait,
        )
        return _Call("/v1/verify", _body(req), _allowed, denied=_denied, resend=True, verify=req, wait=wait)

    @staticmethod
    def settle(hold_id: str, amount: str | None = None) -> _Call[HoldResponse]:
        body = _body(SettleRequest(amount))
        return _Call(_hold_path(hold_id, "settle"), body, _held, resend=True)

    @staticmethod
    def release(hold_id: str) -> _Call[HoldResponse]:
        return _Call(_hold_path(hold_id, "release"), None, _held, resend=True)

    @staticmethod
    def extend(hold_id: str, hold_ttl: int) -> _Call[HoldResponse]:
        """Keep a hold `hold_ttl` seconds from now (a tool that runs long keeps its reservation)."""
        body = _body(ExtendRequest(hold_ttl))
        return _Call(_hold_path(hold_id, "extend"), body, _held, resend=True)

    @staticmethod
    def revoke(
        token: str | None = None, *, token_id: str | None = None, chain: str | None = None
    ) -> _Call[RevokeResponse]:
        """Revoke a token and everything derived from it; with the admin key, `token_id` revokes a whole root, and
        `token_id` with `chain` (a chain id from the audit log) that one chain and everything derived from it."""
        req = RevokeRequest(str(token) if token is not None else None, token_id, chain)
        return _Call("/v1/revoke", _body(req), _revoked, "admin" if token_id is not None else "verifier")

    @staticmethod
    def inspect(token: str) -> _Call[InspectResponse]:
        return _Call("/v1/inspect", _body(InspectRequest(str(token))), _inspected)

    @staticmethod
    def approvals(state: ApprovalState | None = None) -> _Call[list[ApprovalView]]:
        """The approvals this client's credential may decide (the admin key: all), newest first; `state` picks
        one state."""
        query = f"?state={quote(state, safe='')}" if state is not None else ""
        return _Call("/v1/approvals" + query, None, _ApprovalsDecoder, "approver", "GET")

    @staticmethod
    def approval(approval_id: str) -> _Call[ApprovalView]:
        """One approval this client's credential may decide; ApiError 404 for any other."""
        return _Call(_approval_path(approval_id), None, _approval, "approver", "GET")

    @staticmethod
    def approve(approval_id: str, reason: str | None = None) -> _Call[ApprovalView]:
        """Let the call waiting on this approval run, once. The same decision again is answered as the first;
        the other one is ApiError 409."""
        return _Call(_approval_path(approval_id, "approve"), _body(DecideRequest(reason)), _approval, "approver")

    @staticmethod
    def deny(approval_id: str, reason: str | None = None) -> _Call[ApprovalView]:
        """Refuse the call waiting on this approval: it and its retries are denied approval_denied, with
        `reason`."""
        return _Call(_approval_path(approval_id, "deny"), _body(DecideRequest(reason)), _approval, "approver")

    @staticmethod
    def audit(
        *,
        token_id: str | None = None,
        chain: str | None = None,
        tool: str | None = None,
        allowed: bool | None = None,
        kind: AuditKind | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> _Call[dict[str, Any]]:
        """One page of the audit log this client's credential may read (the admin key: every event; a token: its
        own chain's and those derived from it), newest first: `{"events": [...], "next": id}`, `next` only when
        there may be more; pass it as `after` for the next, older page. `since`/`until` are RFC 3339 instants like
        2026-12-01T00:00:00Z; `limit` is 1 to 1000 (default 100)."""
        query = audit_query(
            token_id=token_id,
            chain=chain,
            tool=tool,
            allowed=allowed,
            kind=kind,
            since=since,
            until=until,
            limit=limit,
            after=after,
        )
        return _Call("/v1/audit" + query, None, _audit_page, "approver", "GET")


def _sends(build: Callable[P, _Call[T]]) -> Callable[Concatenate[Client, P], T]:
    """Client's method for a call of the builder: the builder's parameters, so the clients cannot drift apart."""

    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._send(build(*args, **kwargs))

    return _like(method, build, "Client")


def _awaits(build: Callable[P, _Call[T]]) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]]:
    """AsyncClient's method for a call of the builder, as `_sends`."""

    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._send(build(*args, **kwargs))

    return _like(method, build, "AsyncClient")


def _like(method: F, build: Callable[..., Any], owner: str) -> F:
    """`method` named, documented and signed as `build` (self first, returning what the call answers), for
    help(), IDEs and inspect; the ParamSpec gives type checkers the same parameters."""
    answer = typing.get_args(typing.get_type_hints(build)["return"])[0]  # _Call[MintResponse] -> MintResponse
    self = Parameter("self", Parameter.POSITIONAL_ONLY)
    method.__name__, method.__qualname__ = build.__name__, f"{owner}.{build.__name__}"
    method.__doc__ = build.__doc__
    method.__signature__ = signature(build).replace(  # type: ignore[attr-defined]
        parameters=[self, *signature(build).parameters.values()], return_annotation=answer
    )
    return method


def audit_query(**filters: str | int | bool | None) -> str:
    """`?tool=pay&allowed=false`: the audit log's filters as a query string, the unset ones left out (the page and
    the stream take the same filters)."""
    given = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in filters.items() if v is not None}
    return "?" + urlencode(given) if given else ""


def _segment(value: str) -> str:
    """An id as one path segment, whatever it holds: an id taken from a caller, such as `<id>/settle?`, must not
    turn a release into a settle. `.` and `..` are escaped too (a URL would drop them, or step up a level), and an
    empty id is refused (the path would name the collection)."""
    if not value:
        raise ValueError("an id cannot be empty")
    escaped = quote(value, safe="")
    return escaped.replace(".", "%2E") if escaped.strip(".") == "" else escaped


def _hold_path(hold_id: str, action: str) -> str:
    """The service answers 404 for an id that is none."""
    return f"/v1/holds/{_segment(hold_id)}/{action}"


def _approval_path(approval_id: str, action: str | None = None) -> str:
    """As `_hold_path`: an id that is none, or not this credential's to decide, is a 404, never another call."""
    return f"/v1/approvals/{_segment(approval_id)}" + (f"/{action}" if action else "")


class _Base:
    def __init__(
        self,
        url: str,
        *,
        admin_key: str | None = None,
        verifier_key: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        retry_for: float = RETRY_FOR,
    ) -> None:
        self.url = url.rstrip("/")
        self.admin_key = admin_key
        self.verifier_key = verifier_key
        self.token = str(token) if token is not None else None  # a Token too: approve as its holder
        self.timeout = timeout
        self.retry_for = retry_for  # seconds to keep resending a call answered 503; 0: never resend

    def _headers(self, call: _Call[Any]) -> dict[str, str]:
        keys = {"admin": self.admin_key, "verifier": self.verifier_key, "approver": self.admin_key or self.token}
        key = keys[call.credential]
        headers = {"content-type": "application/json"}
        if key:
            headers["authorization"] = f"Bearer {key}"
        return headers

    def _timeout(self, call: _Call[Any]) -> float:
        """A verify that may wait for an approval is given that long, and more, to answer."""
        return max(self.timeout, call.wait + WAIT_MARGIN) if call.wait else self.timeout


class Client(_Base):
    """Synchronous client: `Client(url, admin_key=...).mint(...)`, `.verify(token, tool, cost="0.05 USD")`."""

    def __init__(
        self,
        url: str,
        *,
        admin_key: str | None = None,
        verifier_key: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        retry_for: float = RETRY_FOR,
    ) -> None:
        super().__init__(
            url, admin_key=admin_key, verifier_key=verifier_key, token=token, timeout=timeout, retry_for=retry_for
        )
        self.http = httpx.Client(timeout=timeout, transport=transport)

    def _send(self, call: _Call[T]) -> T:
        deadline, resends = time.monotonic() + self.retry_for, 0
        while True:
            response = self.http.request(
                call.method,
                self.url + call.path,
                content=call.body or b"",
                headers=self._headers(call),
                timeout=self._timeout(call),
            )
            again = call.again(response)
            pause = None if again is None else _pause(resends, deadline)
            if again is None or pause is None:
                return call.result(response)
            time.sleep(pause)
            call, resends = again, resends + 1

    mint = _sends(_Builder.mint)
    verify = _sends(_Builder.verify)
    settle = _sends(_Builder.settle)
    release = _sends(_Builder.release)
    extend = _sends(_Builder.extend)
    revoke = _sends(_Builder.revoke)
    inspect = _sends(_Builder.inspect)
    approvals = _sends(_Builder.approvals)
    approval = _sends(_Builder.approval)
    approve = _sends(_Builder.approve)
    deny = _sends(_Builder.deny)
    audit = _sends(_Builder.audit)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Base):
    """Asynchronous client with the same methods as Client, awaited."""

    def __init__(
        self,
        url: str,
        *,
        admin_key: str | None = None,
        verifier_key: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        retry_for: float = RETRY_FOR,
    ) -> None:
        super().__init__(
            url, admin_key=admin_key, verifier_key=verifier_key, token=token, timeout=timeout, retry_for=retry_for
        )
        self.http = httpx.AsyncClient(timeout=timeout, transport=transport)

    async def _send(self, call: _Call[T]) -> T:
        deadline, resends = time.monotonic() + self.retry_for, 0
        while True:
            response = await self.http.request(
                call.method,
                self.url + call.path,
                content=call.body or b"",
                headers=self._headers(call),
                timeout=self._timeout(call),
            )
            again = call.again(response)
            pause = None if again is None else _pause(resends, deadline)
            if again is None or pause is None:
                return call.result(response)
            await asyncio.sleep(pause)
            call, resends = again, resends + 1

    mint = _awaits(_Builder.mint)
    verify = _awaits(_Builder.verify)
    settle = _awaits(_Builder.settle)
    release = _awaits(_Builder.release)
    extend = _awaits(_Builder.extend)
    revoke = _awaits(_Builder.revoke)
    inspect = _awaits(_Builder.inspect)
    approvals = _awaits(_Builder.approvals)
    approval = _awaits(_Builder.approval)
    approve = _awaits(_Builder.approve)
    deny = _awaits(_Builder.deny)
    audit = _awaits(_Builder.audit)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
