"""The exceptions of agentcaps — something broke or cannot be trusted; a refused call is a Denial, not one of these.

    AgentcapsError
    ├── InvalidToken       undecodable, over a limit, unknown key id, bad signature: one public error
    ├── StoreUnavailable   the counter store did not answer for sure: fail closed (503)
    ├── ConfigError        settings that cannot be used, said in plain words at start-up
    └── NotFound, Conflict hold and idempotency outcomes the API maps to 404 and 409
"""

from __future__ import annotations


class AgentcapsError(Exception):
    pass


class InvalidToken(AgentcapsError):
    """Every decode or signature failure; the message is safe to show, and never says which byte failed."""


class StoreUnavailable(AgentcapsError):
    """The counter store could not decide; nothing may be allowed on this doubt."""


class ConfigError(AgentcapsError):
    pass


class NotFound(AgentcapsError):
    pass


class Conflict(AgentcapsError):
    pass
