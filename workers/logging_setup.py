"""Log lines for workers, beat, Flower and the CLI: JSON (one object per line) or text, each
carrying the task id, the task name and the check being processed.

The task comes from Celery's task_prerun/task_postrun signals and the check from
`log_context(check=name)` (core/logcontext.py) where code handles one check
(core/pipeline.py); both travel in context variables, so they reach every line logged
meanwhile, by any library, and asyncio tasks started inside inherit them.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from contextvars import Token
from datetime import UTC, datetime
from typing import Any, TextIO

from celery.signals import setup_logging, task_postrun, task_prerun, worker_shutting_down

from beat_schedule import ROUTINE_TASKS
from core import logcontext
from core.logcontext import log_context

# Always present in a JSON line (null when unknown), so a log query can rely on them.
CONTEXT_KEYS = ("task_id", "task_name", "check")

_task_tokens: dict[str, Token[Mapping[str, str]]] = {}
_process_task: dict[str, str] = {}
_HANDLER_MARK = "_eventops_handler"

__all__ = ["configure_logging", "log_context"]


class ContextFilter(logging.Filter):
    """Copies the context onto each record (record.task_id, record.task_name, record.check).

    Celery's own lines about a task outside it ("Task x[id] received", logged by the main
    process) name the task in their arguments; those are used when no task is bound.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        fields: dict[str, Any] = dict.fromkeys(CONTEXT_KEYS)
        args = record.args
        if isinstance(args, Mapping) and "id" in args and "name" in args:
            fields["task_id"], fields["task_name"] = str(args["id"]), str(args["name"])
        # A prefork child runs one task at a time: lines from threads a task started (where
        # context variables do not follow) belong to it too.
        fields.update(_process_task)
        fields.update(logcontext.current())
        for key, value in fields.items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        record.eventops_extra = {k: v for k, v in fields.items() if k not in CONTEXT_KEYS}
        return True


class RoutineTaskLines(logging.Filter):
    """Celery's "sent", "received" and "succeeded" lines about a routine task
    (beat_schedule.ROUTINE_TASKS: a tick every few seconds, a probe batch) become DEBUG
    lines: left out at INFO, kept when DEBUG is asked for. A routine task's failures and
    retries keep their level, and so does every line its own code logs."""

    # Celery's own words for them (celery.beat, celery.app.trace LOG_RECEIVED / LOG_SUCCESS).
    _SENT = "Scheduler: Sending due task %s (%s)"
    _RECEIVED = "Task %(name)s[%(id)s] received"
    _SUCCEEDED = "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s"

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not self._routine(record):
            return True
        if not logging.getLogger().isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True

    def _routine(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.msg == self._SENT and isinstance(args, tuple) and len(args) == 2:
            return args[1] in ROUTINE_TASKS
        if record.msg in (self._RECEIVED, self._SUCCEEDED) and isinstance(args, Mapping):
            return args.get("name") in ROUTINE_TASKS
        return False


# The loggers Celery says those lines on.
_ROUTINE_LINE_LOGGERS = ("celery.beat", "celery.worker.strategy", "celery.app.trace")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, process, message, the context."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            data[key] = getattr(record, key, None)
        data.update(getattr(record, "eventops_extra", {}))
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        # default=str: a stray object in a message must not cost the line.
        return json.dumps(data, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The classic line, with `[task_name task_id check=...]` when there is a context."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        parts = []
        if task_name := getattr(record, "task_name", None):
            parts.append(f"{task_name}[{getattr(record, 'task_id', '')}]")
        if check := getattr(record, "check", None):
            parts.append(f"check={check}")
        return f"{line} [{' '.join(parts)}]" if parts else line


def configure_logging(
    log_format: str | None = None, level: str | int = "INFO", stream: TextIO | None = None
) -> None:
    """Send the root logger to stderr in the chosen format; safe to call more than once."""
    log_format = log_format or _format_from_settings()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    # sys.__stderr__: the real one, not a stand-in a caller (click's test runner) may close.
    handler = logging.StreamHandler(stream or sys.__stderr__)
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # httpx logs every request at INFO: one line per probe, thousands a second, a fifth of a
    # probe's CPU (bench P1). A probe's result is its outcome row, not a log line; at DEBUG,
    # asked for while investigating, they are let through.
    logging.getLogger("httpx").setLevel(
        logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING
    )
    for name in _ROUTINE_LINE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(each, RoutineTaskLines) for each in logger.filters):
            logger.addFilter(RoutineTaskLines())
    # Python's warnings become log lines too, so no line on stderr escapes the format; so
    # does a crash's traceback in JSON mode (one JSON line, not thirty lines of text).
    logging.captureWarnings(True)
    if log_format == "json":
        sys.excepthook = _log_uncaught


def _log_uncaught(kind: type[BaseException], error: BaseException, trace: Any) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, trace)
        return
    logging.getLogger("eventops").critical("uncaught exception", exc_info=(kind, error, trace))


def _format_from_settings() -> str:
    try:
        from workers.settings import get_settings

        return get_settings().log_format
    except Exception:  # bad settings are reported by the command itself
        return "json" if os.environ.get("EVENTOPS_LOG_FORMAT") == "json" else "text"


def json_logs() -> bool:
    return _format_from_settings() == "json"


def settings_log_level() -> str:
    try:
        from workers.settings import get_settings

        return get_settings().log_level
    except Exception:  # bad settings are reported by the command itself
        return "WARNING"


# --- Celery's hooks -----------------------------------------------------------------------


@setup_logging.connect
def _celery_logging(loglevel: int | str | None = None, **_: Any) -> None:
    # Connected, this replaces Celery's own logging setup in workers and beat.
    configure_logging(level=loglevel or "INFO")


@worker_shutting_down.connect
def _log_shutdown(how: str | None = None, sig: str | None = None, **_: Any) -> None:
    # Celery says this on stdout only; the log stream should have it too.
    logging.getLogger("eventops.worker").info("%s shutdown on %s", how or "warm", sig or "signal")


@task_prerun.connect
def _bind_task(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task_id:
        name = getattr(task, "name", None)
        _task_tokens[task_id] = logcontext.bind(task_id=task_id, task_name=name)
        _process_task.clear()
        _process_task.update(task_id=task_id, task_name=name or "")


@task_postrun.connect
def _unbind_task(task_id: str | None = None, **_: Any) -> None:
    if _process_task.get("task_id") == task_id:
        _process_task.clear()
    token = _task_tokens.pop(task_id or "", None)
    if token is not None:
        logcontext.unbind(token)
