"""Restarting in place: what crosses the exec, and the exec itself.

A memory restart and a reload replace the supervisor's program image with
a fresh one (same pid, so systemd and Kubernetes see the same process). What
must survive goes in one environment variable, ``AKTO_COLLECTOR_STATE`` (a
JSON object), read by the next image at start:

- ``restarts``: counts by cause (``memory``, ``reload``, ``worker``), exported;
- ``memory``: the memory guard's back-off (``MemoryGuard.state()``);
- ``counters``: every counter's total so far, so counters only go up;
- ``file_vars``: the variables ``AKTO_ENV_FILE`` set over the starting
  environment, with the value each had before (None: it was unset), so that
  a reload reads the file again over the *starting* environment;
- ``started``: when the first image started;
- ``detached``: when the image before this one detached its programs (wall
  clock), so that this one counts how long nothing was captured.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping

import orjson

from akto_collector.config import STATE_VARIABLE as STATE_VAR


class ExecState:
    __slots__ = ("restarts", "memory", "counters", "file_vars", "started", "detached")

    def __init__(self, restarts=None, memory=None, counters=None, file_vars=None, started=None,
                 detached=None) -> None:
        self.restarts: dict[str, int] = dict(restarts or {})
        self.memory: dict = dict(memory or {})
        self.counters: dict[str, int] = dict(counters or {})
        self.file_vars: dict[str, str | None] = dict(file_vars or {})
        self.started: float = time.time() if started is None else float(started)
        self.detached: float | None = None if detached is None else float(detached)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ExecState:
        raw = env.get(STATE_VAR, "")
        if not raw:
            return cls()
        try:
            doc = orjson.loads(raw)
            return cls(doc.get("restarts"), doc.get("memory"), doc.get("counters"), doc.get("file_vars"),
                       doc.get("started"), doc.get("detached"))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            return cls()  # a state we cannot read: start afresh rather than not at all

    def encode(self) -> str:
        return orjson.dumps({"restarts": self.restarts, "memory": self.memory, "counters": self.counters,
                             "file_vars": self.file_vars, "started": self.started,
                             "detached": self.detached}).decode()


def starting_environment(env: Mapping[str, str], state: ExecState) -> dict[str, str]:
    """``env`` as it was before any environment file was read over it."""
    out = {k: v for k, v in env.items() if k != STATE_VAR}
    for name, before in state.file_vars.items():
        if before is None:
            out.pop(name, None)
        else:
            out[name] = before
    return out


def file_overrides(base: Mapping[str, str], effective: Mapping[str, str]) -> dict[str, str | None]:
    """What an environment file changed: name -> the value before (None: unset)."""
    return {k: base.get(k) for k, v in effective.items() if base.get(k) != v}


def exec_afresh(env: Mapping[str, str]) -> None:
    """Replace this process with a fresh collector (same arguments, this environment). Does not return."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "akto_collector", *sys.argv[1:]], dict(env))
