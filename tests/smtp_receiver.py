"""A real local SMTP server for tests (aiosmtpd): collects mail, can answer 451 at first."""

from __future__ import annotations

import socket
import threading
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SmtpReceiver:
    """Plain SMTP on 127.0.0.1 (no TLS, no auth). `failures_left` makes the next N messages
    get `451 4.3.0` (a temporary failure) at DATA instead of being accepted."""

    def __init__(self, sender: str = "eventops@example.test", to: str = "ops@example.test"):
        self.sender = sender
        self.to = to
        self.received: list[EmailMessage] = []
        self.failures_left = 0
        self.attempts = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                with receiver._lock:
                    receiver.attempts += 1
                    if receiver.failures_left > 0:
                        receiver.failures_left -= 1
                        return "451 4.3.0 Temporary failure, try again later"
                    message = message_from_bytes(envelope.content, policy=policy.default)
                    assert isinstance(message, EmailMessage)
                    receiver.received.append(message)
                return "250 2.0.0 Message accepted for delivery"

        self.port = _free_port()
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    @property
    def apprise_url(self) -> str:
        # `mailto://` (not `mailtos://`) is Apprise's insecure mode: plain SMTP, no STARTTLS;
        # with no user, no login is attempted. The host is the SMTP server itself.
        return f"mailto://127.0.0.1:{self.port}?from={self.sender}&to={self.to}"

    def subjects(self) -> list[str]:
        with self._lock:
            return [str(m["Subject"]) for m in self.received]

    def bodies(self) -> list[str]:
        """The plain-text part of each message (Apprise sends text and HTML alternatives)."""
        with self._lock:
            messages = list(self.received)
        texts = []
        for message in messages:
            part = message.get_body(preferencelist=("plain",))
            texts.append(part.get_content() if isinstance(part, EmailMessage) else "")
        return texts

    def __enter__(self) -> SmtpReceiver:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()
