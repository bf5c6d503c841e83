"""systemd's notify protocol (sd_notify(3)), a few lines over a datagram socket.

``NOTIFY_SOCKET`` names an AF_UNIX datagram socket (a path, or an abstract
name written with a leading ``@``); each message is ``KEY=value`` lines. The
socket is non-blocking and a message that cannot be sent is dropped and
counted: the supervisor's loop never waits on systemd. ``WATCHDOG_USEC`` asks
for ``WATCHDOG=1`` at least that often (we send at half the interval), for
``WATCHDOG_PID`` (when set) only. Without ``NOTIFY_SOCKET`` everything here is a
no-op. These few lines are all of the protocol we use; python-systemd's
``daemon.notify`` would need libsystemd's headers to build.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from collections.abc import Mapping


class Notifier:
    def __init__(self, env: Mapping[str, str] = os.environ, counters: Counter | None = None) -> None:
        self.counters = Counter() if counters is None else counters
        self._sock: socket.socket | None = None
        self._addr = ""
        path = env.get("NOTIFY_SOCKET", "")
        if path:
            self._addr = "\0" + path[1:] if path.startswith("@") else path
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        self.watchdog_interval = 0.0  # seconds between WATCHDOG=1; 0: no watchdog asked for
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if self._sock is not None and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 2e6
        self._next_watchdog = 0.0

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, **fields: str | int) -> bool:
        """One message: ``send(READY=1, STATUS="...")``. False when not delivered."""
        if self._sock is None:
            return False
        text = "\n".join(f"{k}={v}" for k, v in fields.items())
        try:
            self._sock.sendto(text.encode(), self._addr)
            return True
        except OSError:
            self.counters["notify.failed"] += 1
            return False

    def ready(self, status: str) -> None:
        self.send(READY=1, STATUS=status, MAINPID=os.getpid())

    def status(self, text: str) -> None:
        self.send(STATUS=text)

    def watchdog(self, now: float) -> None:
        """Called from the loop: pings when due. The loop calls it only while healthy."""
        if self.watchdog_interval and now >= self._next_watchdog:
            self._next_watchdog = now + self.watchdog_interval
            self.send(WATCHDOG=1)

    def reloading(self) -> None:
        self.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def extend_timeout(self, seconds: float) -> None:
        self.send(EXTEND_TIMEOUT_USEC=int(seconds * 1e6))

    def stopping(self) -> None:
        self.send(STOPPING=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
