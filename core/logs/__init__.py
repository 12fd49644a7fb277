"""Platform logs: incremental JSON-lines ingestion, error patterns, rotation."""
