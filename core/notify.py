"""Deliver one message to one Apprise URL, and say why when it does not arrive."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import apprise


@dataclass(frozen=True)
class Delivery:
    ok: bool
    error: str | None = None


NOTIFY_TYPES = {
    "critical": apprise.NotifyType.FAILURE,
    "warning": apprise.NotifyType.WARNING,
    "info": apprise.NotifyType.INFO,
    "resolved": apprise.NotifyType.SUCCESS,
}


def deliver(url: str, title: str, body: str, kind: str = "info") -> Delivery:
    """Send through Apprise. Never raises; the error text never contains the URL (a secret).

    `kind` (a severity, or "resolved") picks Apprise's message type, which channels such
    as Slack and Teams show as a colour.
    """
    sender = apprise.Apprise()
    if not sender.add(url):
        return Delivery(False, "not a usable Apprise URL")
    try:
        with apprise.LogCapture(level=logging.WARNING) as captured:
            ok = sender.notify(
                title=title,
                body=body,
                # Plain text: otherwise e-mail turns the body's line breaks into spaces.
                body_format=apprise.NotifyFormat.TEXT,
                notify_type=NOTIFY_TYPES.get(kind, apprise.NotifyType.INFO),
            )
            log = captured.getvalue()
    except Exception as error:  # a plugin bug must not lose the notification
        return Delivery(False, f"{type(error).__name__} in Apprise")
    if ok:
        return Delivery(True)
    return Delivery(False, redact(log.strip().splitlines()[-1] if log.strip() else "", url))


def redact(message: str, url: str) -> str:
    """Drop the URL and its parts from an error message before it is stored or logged."""
    message = message.replace(url, "<channel url>")
    for part in url.replace("://", "/").replace("?", "/").replace("&", "/").split("/"):
        if len(part) >= 8:
            message = message.replace(part, "***")
    return (message or "delivery failed")[:500]
