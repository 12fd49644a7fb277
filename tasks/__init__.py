"""Thin Celery tasks, one module per duty; the logic lives in core/."""
