"""The exceptions of agentcaps: a request that cannot be acted on, or something that broke or cannot be trusted. A
refused call is a Denial, a value, not one of these. Each line says when it is raised — and what the API answers.

    AgentcapsError
    ├── BadRequest        a request that cannot be acted on, naming its field (a ValueError) — 400 bad_request
    ├── Unauthorized      no admin or verifier key, a wrong one, or a body naming another audience — 401 unauthorized
    ├── InvalidToken      undecodable, over a limit, unknown key id, bad signature — 403 invalid_token denial
    ├── NotFound          no such hold or approval, an expired one, another verifier's — 404 not_found
    ├── Conflict          a hold concluded otherwise, a request_id reused for another request — 409 conflict
    ├── TooMany           more live audit streams than one process serves — 429 too_many
    ├── StoreUnavailable  the counter store did not answer for sure: fail closed — 503 store_unavailable
    ├── ConfigError       settings that cannot be used, said in plain words — the service does not start
    ├── UsageError        a CLI command given what it cannot use — exit code 2
    ├── TokenError        the SDK's offline Token: undecodable, or an attenuation refused (a ValueError)
    ├── CostError         a call's cost cannot be read from its arguments (a ValueError) — the MCP guard denies it
    └── ApiError          the SDK's clients: the service refused the request itself, with its status, code, reason

Plain Python, no dependency: the offline SDK imports it without the server's extras.
"""

from __future__ import annotations


class AgentcapsError(Exception):
    pass


class BadRequest(AgentcapsError, ValueError):
    """`reason` in plain words; `field` the culprit, as a dotted path into the request (None: the body itself)."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class Unauthorized(AgentcapsError):
    """The message says which key the call needs; never the key presented."""


class InvalidToken(AgentcapsError):
    """Every decode or signature failure; the message is safe to show, and never says which byte failed."""


class NotFound(AgentcapsError):
    pass


class Conflict(AgentcapsError):
    pass


class TooMany(AgentcapsError):
    """The caller asks the service to hold more of something than it holds for anyone (live audit streams): 429."""


class StoreUnavailable(AgentcapsError):
    """The counter store could not decide; nothing may be allowed on this doubt. The message, which may name the
    store's hosts, is logged; a client is told REASON.

    It may have decided all the same (its answer, or the replicas' confirmation, was lost): on a verify,
    `request_id` is the id that decision was stored under, so resending the request with it replays it."""

    REASON = "the counter store is unavailable; retry later"
    request_id: str | None = None


class ConfigError(AgentcapsError):
    pass


class UsageError(AgentcapsError):
    pass


class TokenError(AgentcapsError, ValueError):
    """A token that does not decode, or an attenuation refused; the message says why in plain words."""


class CostError(AgentcapsError, ValueError):
    """The call's cost cannot be read from its arguments: the call is denied (arg_mismatch) and never runs."""


class ApiError(AgentcapsError):
    """The service refused the request itself (400, 401, 403, 404, 409, 413, 5xx): `code`, `reason`, `field`.

    A verify's 503 also names its `request_id`: resending the same verify with it later replays what the store may
    have decided instead of charging again."""

    def __init__(
        self, status: int, code: str, reason: str, field: str | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {reason}" + (f" (field {field})" if field else ""))
        self.status, self.code, self.reason, self.field = status, code, reason, field
        self.request_id = request_id
