"""Test-support helpers (real servers for integration tests)."""
