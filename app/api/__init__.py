"""The HTTP service of docs/api.md: Litestar handlers over the Authority."""
