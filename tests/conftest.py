"""Shared fixtures: a frozen clock, a key ring, and token helpers."""
