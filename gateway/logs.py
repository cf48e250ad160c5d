"""Structured logs: one ``key=value`` line per event (logfmt), on stderr.

Two events carry the gateway's story (docs/service.md, "Logs"):

* ``job`` -- a job moved between states (``VideoJob.move``): job id, attempt, vendor,
  from/to state, seconds spent in the previous state;
* ``vendor_call`` -- one HTTP call to a vendor (``transport.send``): job id, attempt,
  vendor, phase, outcome (HTTP status or error class), latency.

Fields are chosen, never dumped: a prompt, an image or a header never reaches a log line,
and every line is passed through :func:`gateway.errors.redact` as well, so a key the
process holds cannot leak through a message either.
"""

from __future__ import annotations

import contextvars
import logging
import math
import os
import re
import sys
import time
from collections.abc import Mapping
from typing import IO, Any, Final

from gateway.errors import InvalidRequest, redact

#: the environment variable that sets the level when no ``--log-level`` flag is given
LOG_LEVEL_ENV: Final = "REELGATE_LOG_LEVEL"
LEVELS: Final[Mapping[str, int]] = {"debug": logging.DEBUG, "info": logging.INFO,
                                    "warning": logging.WARNING, "error": logging.ERROR}
#: the root of every reelgate logger; the handler is installed here, not on the root logger
ROOT: Final = "reelgate"
#: where the structured fields of a record travel (``LogRecord`` attribute)
FIELDS_ATTR: Final = "reelgate_fields"

job_log = logging.getLogger("reelgate.job")
vendor_log = logging.getLogger("reelgate.vendor")

#: (job id, attempt number) whose vendor calls are being made in this task; set where an
#: attempt's calls begin (submit, polling, cancel, download), read by ``transport.send``
_attempt: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar("reelgate_attempt", default=None)


def level_from(flag: str | None, env: Mapping[str, str] | None = None, *, default: str = "warning") -> int:
    """The level named by ``--log-level`` (wins) or ``$REELGATE_LOG_LEVEL``, else ``default``.
    Raises ``InvalidRequest`` naming where the bad value came from."""
    env = os.environ if env is None else env
    source, text = ("--log-level", flag) if flag is not None else (LOG_LEVEL_ENV, env.get(LOG_LEVEL_ENV))
    if not text:
        return LEVELS[default]
    level = LEVELS.get(text.strip().lower())
    if level is None:
        raise InvalidRequest(source, f"{text!r} is not a log level; use one of {', '.join(LEVELS)}")
    return level


def configure(level: int, stream: IO[str] | None = None) -> logging.Handler:
    """Send reelgate's logs at ``level`` and above to ``stream`` (default: whatever
    ``sys.stderr`` is when a line is written), one line each. Called once by a command; a
    second call replaces the first's handler rather than doubling every line."""
    root = logging.getLogger(ROOT)
    for old in [h for h in root.handlers if isinstance(h.formatter, KeyValueFormatter)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(KeyValueFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    return handler


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the current ``sys.stderr``, not the one at configuration time (a test
    runner or an embedding app may swap it, and close the old one)."""

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def for_attempt(attempt_key: str) -> None:
    """The vendor calls made from here on in this task belong to this attempt, whose key
    reads ``"{job id}.{n}"`` (``runner._open``)."""
    job_id, _, number = attempt_key.rpartition(".")
    _attempt.set((job_id, int(number)) if number.isdigit() else (attempt_key, 0))


def job_moved(job_id: str, attempt: int, vendor: str | None, old: str, new: str, since: float,
              error: str | None = None) -> None:
    if job_log.isEnabledFor(logging.INFO):
        job_log.info("job", extra={FIELDS_ATTR: {
            "job": job_id, "attempt": attempt, "vendor": vendor, "from": old, "to": new,
            "latency_ms": _ms(time.time() - since), "error": error}})


def vendor_called(vendor: str, phase: str, started: float, *, status: int | None = None,
                  error: str | None = None) -> None:
    """One call to a vendor ended (``started`` from ``time.perf_counter()``). Successful polls
    are debug: a service following thousands of jobs would otherwise log mostly those."""
    level = logging.DEBUG if phase == "status" and error is None and status is not None and status < 400 \
        else logging.INFO
    if vendor_log.isEnabledFor(level):
        job_id, attempt = _attempt.get() or (None, None)
        vendor_log.log(level, "vendor_call", extra={FIELDS_ATTR: {
            "job": job_id, "attempt": attempt, "vendor": vendor, "phase": phase,
            "outcome": error or status, "latency_ms": _ms(time.perf_counter() - started)}})


def _ms(seconds: float) -> int:
    return max(round(seconds * 1000), 0) if math.isfinite(seconds) else 0


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=info logger=reelgate.job event=job job=vid_... attempt=1 ...`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        pairs: dict[str, Any] = {"ts": f"{stamp}.{int(record.msecs):03d}Z", "level": record.levelname.lower(),
                                 "logger": record.name, "event": record.getMessage()}
        pairs.update((k, v) for k, v in getattr(record, FIELDS_ATTR, {}).items() if v is not None)
        if record.exc_info and record.exc_info[1] is not None:
            pairs["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
            pairs["traceback"] = self.formatException(record.exc_info)
        return redact(" ".join(f"{k}={_value(v)}" for k, v in pairs.items()))


#: what makes a value need quotes: a space, a quote, ``=``, a backslash, or any character
#: that is not printable (control characters, line and paragraph separators...)
_NEEDS_QUOTES = re.compile(r'[\s"=\\]|[^\x21-\x7e]')
#: escaped inside quotes: besides ``"`` and ``\``, every C0/C1 control character and the
#: Unicode line breaks. A caller's text reaches some lines (a URL path, a vendor's error
#: message); raw, a NUL or an ESC sequence would corrupt the log or a terminal showing it,
#: and a line break would let it forge a line.
_ESCAPED = re.compile(r'["\\\x00-\x1f\x7f-\x9f\u2028\u2029]')
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) <= 0xFF else f"\\u{ord(char):04x}")


def _value(value: object) -> str:
    text = str(value)
    if text and not _NEEDS_QUOTES.search(text):
        return text
    return f'"{_ESCAPED.sub(_escape, text)}"'
