"""The long-running service: the daemon's scheduler and polls, its HTTP app and metrics."""
