"""The HTTP side: dashboard, ingestion endpoints and /metrics."""
