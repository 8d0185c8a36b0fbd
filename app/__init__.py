"""agentcaps: the token core, counter stores, HTTP service, SDK and CLI."""
