"""Security event detection: sources, the detectors, bans and the daily analysis (issue 5)."""
