"""The one place that adds log handlers: a rotating file and the terminal, on the `zmqgrid` logger."""
from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

from .errors import ConfigError
from .text import printable

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MAX_BYTES = 10 * 1024 * 1024
BACKUP_COUNT = 5
MAX_LINE_CHARS = 2000   # a record's message, before a traceback; longer ones are cut (a peer's 8 MB host name)
_MARK = "_zmqgrid_handler"  # set on handlers we add, so a second call replaces them instead of stacking


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose files are created owner-only (0600): logs name hosts, commands and task output."""

    def _open(self):  # type: ignore[override]
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


class OneLineFormatter(logging.Formatter):
    """Every record's message is one line of at most MAX_LINE_CHARS, control characters shown as escapes
    (text.printable): a newline or ESC in a device id, host or error a peer sent cannot forge a log line or
    reach the terminal raw, whoever logged it. A traceback (exc_info) still follows on its own lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message, MAX_LINE_CHARS)
        return super().formatMessage(record)


def _numeric(level: str) -> int:
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else None
    if not isinstance(numeric, int):
        raise ConfigError(f"log_level = {level!r} is not allowed",
                          "expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return numeric


def configure_logging(level: str = "INFO", log_file: str | None = None, *, stream: bool = True,
                      terminal_level: str | None = None, name: str = "zmqgrid") -> None:
    """Send the `name` logger's records at `level` and above to `log_file` (rotated) and, if `stream`, stderr.
    With `terminal_level` and a `log_file`, stderr gets only the records from `terminal_level` up (the demo keeps
    its table readable: its daemons' INFO lines go to the file only, warnings and errors to both).

    Calling it again replaces the handlers it added before, so a daemon can reconfigure without duplicates.
    The root logger is left alone: zmqgrid used as a library must not take over its host's logging.
    """
    numeric = _numeric(level)
    terminal = max(numeric, _numeric(terminal_level)) if terminal_level and log_file else numeric
    handlers: list[logging.Handler] = []
    if log_file:
        try:
            Path(log_file).parent.mkdir(parents=True, exist_ok=True)
            handlers.append(PrivateRotatingFileHandler(
                log_file, maxBytes=MAX_BYTES, backupCount=BACKUP_COUNT, encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"log_file = {str(log_file)!r} cannot be written ({e.strerror or e})",
                              "choose another log_file or fix the directory's permissions") from None
    if stream:
        handlers.append(logging.StreamHandler(sys.stderr))
        handlers[-1].setLevel(terminal)
    logger = logging.getLogger(name)
    for old in [h for h in logger.handlers if getattr(h, _MARK, False)]:
        logger.removeHandler(old)
        old.close()
    formatter = OneLineFormatter(FORMAT)
    for handler in handlers:
        setattr(handler, _MARK, True)
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    logger.setLevel(numeric)
