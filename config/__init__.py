"""Settings and the root of mailsync's exception hierarchy: the only readers of TOML and environment."""
