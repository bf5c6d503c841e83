"""Structured logs: JSON lines on stderr (readable key=value on a terminal).

Configured once per process: the supervisor at start, each worker after it
starts, with role/worker bound so an operator can troubleshoot from the logs
alone. Data never goes to stderr and logs never go to stdout.
"""

from __future__ import annotations

import logging as _stdlib_logging
import sys

import orjson
import structlog

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def configure(level: str = "info", **bind) -> structlog.stdlib.BoundLogger:
    """Set up structlog for this process and return a logger bound to `bind`."""
    console = sys.stderr.isatty()
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if console:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
        factory = structlog.PrintLoggerFactory(sys.stderr)
    else:
        processors.append(structlog.processors.JSONRenderer(serializer=orjson.dumps))
        factory = structlog.BytesLoggerFactory(sys.stderr.buffer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, 20)),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # Libraries (kafka-python) log through the standard library: keep their
    # warnings, on stderr, one line each.
    _stdlib_logging.basicConfig(level=_stdlib_logging.WARNING, stream=sys.stderr,
                                format='{"event":"%(message)s","logger":"%(name)s","level":"%(levelname)s"}')
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**bind)
    return structlog.get_logger()
