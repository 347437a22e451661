"""The pipeline: runs the stages over each message (ingest), per folder (sync) or file (importer)."""
