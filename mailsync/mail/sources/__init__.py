"""Sources yield raw bytes with provenance (RawMessage); they never parse."""
