"""mailsync: the capture daemon's sources, pipeline, digest and command line."""
