"""The logic of each duty as plain functions: no Celery imports here."""
