"""The HTTP service of SPEC §3: Litestar handlers over the Authority."""
