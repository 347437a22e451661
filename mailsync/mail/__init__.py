"""Mail handling: sources yield raw bytes, identity names a message, parse reads it, thread groups it."""
