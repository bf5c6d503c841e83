"""JSON lines: each message plus a newline, to stdout or a file (the default sink).

Several worker processes write to the same stdout, so a batch of whole lines
goes out under a POSIX record lock; see ``JsonLinesSink``.
"""

from __future__ import annotations

import fcntl
import os
import select
import time
from collections import Counter

import structlog

log = structlog.get_logger()

# A single os.write of at most PIPE_BUF bytes to a pipe is atomic; larger
# writes are made exclusive with a POSIX record lock (see JsonLinesSink).
_PIPE_BUF = getattr(select, "PIPE_BUF", 4096)
_JSONL_FLUSH_BYTES = 256 << 10


class JsonLinesSink:
    """Each value plus b"\\n", appended to a file or written to stdout.

    Several worker processes write to the same stdout, so a batch of whole
    lines goes out under a POSIX record lock (lockf: per process, so it
    excludes other workers even though they share the inherited file
    description; flock would not). Where the lock is refused, batches are
    cut at line boundaries into pieces of at most PIPE_BUF bytes, which a
    pipe writes atomically; only a single line longer than that can then
    interleave.
    """

    def __init__(self, output: str = "-", counters: Counter | None = None, flush_interval: float = 0.5):
        self.counters = Counter() if counters is None else counters
        self._flush_interval = flush_interval
        if output == "-":
            # File descriptor 1 itself, not sys.stdout (which Python or a
            # test harness may have replaced): it is what the workers share.
            self._fd = 1
            self._own_fd = False
            self._target = "stdout"
        else:
            self._fd = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self._own_fd = True
            self._target = output
        self._lines: list[bytes] = []
        self._bytes = 0
        self._next_write = time.monotonic() + flush_interval
        self._lockable = True
        self._error_logged = False
        self.state = "open"

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    @property
    def buffered_messages(self) -> int:
        return len(self._lines)

    def send(self, key: bytes, value: bytes) -> None:
        self._lines.append(value)
        self._bytes += len(value) + 1
        self.counters["sink.sent"] += 1
        if self._bytes >= _JSONL_FLUSH_BYTES:
            self._write()

    def poll(self) -> None:
        if self._lines and time.monotonic() >= self._next_write:
            self._write()

    def flush(self, timeout: float = 0.0) -> None:
        if self._lines:
            self._write()

    def close(self, timeout: float = 0.0) -> None:
        if self.state == "closed":
            return
        self.flush(timeout)
        if self._own_fd:
            os.close(self._fd)
        self.state = "closed"

    def _write(self) -> None:
        lines, self._lines, self._bytes = self._lines, [], 0
        self._next_write = time.monotonic() + self._flush_interval
        if self.state == "closed":
            self.counters["sink.dropped.shutdown"] += len(lines)
            return
        n = len(lines)
        try:
            if self._lockable and self._lock():
                try:
                    # The empty last item gives the final newline: `join(...) + b"\n"`
                    # would copy the whole batch (hundreds of KiB) a second time.
                    lines.append(b"")
                    self._write_all(b"\n".join(lines))
                finally:
                    self._unlock()
            else:
                for piece in _pieces(lines):
                    self._write_all(piece)
        except OSError as exc:
            # EPIPE (reader gone), ENOSPC, ...: count the batch, keep running.
            self.counters["sink.dropped.error"] += n
            if not self._error_logged:
                log.error("output write failed", target=self._target, error=str(exc))
                self._error_logged = True
            self.state = "failed"
            return
        self.counters["sink.delivered"] += n
        if self.state == "failed":
            log.info("output writable again", target=self._target)
            self._error_logged = False
        self.state = "open"

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def _lock(self) -> bool:
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
            return True
        except OSError:
            self._lockable = False  # e.g. a socket or read-only fd: fall back to PIPE_BUF pieces
            return False

    def _unlock(self) -> None:
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
        except OSError:
            pass


def _pieces(lines: list[bytes]) -> list[bytes]:
    """Join lines into chunks of at most PIPE_BUF bytes, never splitting a line."""
    out: list[bytes] = []
    cur: list[bytes] = []
    size = 0
    for line in lines:
        n = len(line) + 1
        if cur and size + n > _PIPE_BUF:
            out.append(b"\n".join(cur) + b"\n")
            cur, size = [], 0
        cur.append(line)
        size += n
    if cur:
        out.append(b"\n".join(cur) + b"\n")
    return out
