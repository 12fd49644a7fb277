"""Backups and disaster recovery of the platform database, its files and its config."""
