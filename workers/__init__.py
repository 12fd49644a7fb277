"""The process side: the Celery app, settings, queues, signals, the CLI and the launcher."""
