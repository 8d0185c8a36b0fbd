"""The suite's bearer keys, in one place. The service refuses admin and verifier keys shorter than 32 characters,
so every key here is at least that long; tests that need a key of their own take it from here."""

from __future__ import annotations

ADMIN_KEY = "ak_system_tests_admin_key_0123456789"
WRONG_ADMIN_KEY = "ak_wrong_admin_key_0123456789abcdef"  # as strong as a real one, and not configured
VERIFIER_KEY = "search-srv-key-0123456789abcdef0123"  # search-srv's verifier key
PAYMENTS_KEY = "payments-srv-key-0123456789abcdef01"  # payments-srv's
TOOLS_SRV_KEY = "tools-srv-key-0123456789abcdef012345"  # the MCP gateway's, named tools-srv
WRONG_VERIFIER_KEY = "wrong-verifier-key-0123456789abcdef"
