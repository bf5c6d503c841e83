"""Which of the per-message modules run compiled, and whether a build is stale.

setup.py compiles ``MODULES`` with Cython where it can (about 25% less CPU
per pair); the package works the same as plain Python. A compiled module
older than its source would run yesterday's code, so that is reported
(doctor, the ``ready`` log line) and refused by the test suite.
"""

from __future__ import annotations

import importlib
import os

# The hot path, in data-flow order (docs/ARCHITECTURE.md, "Compiled core").
MODULES = ("ringbuf", "supervisor", "events", "http1", "streams", "message", "filters", "worker", "sinks")


def module_status() -> dict[str, str]:
    """Module name -> "compiled", "interpreted" or "stale" (compiled, older than its source)."""
    out = {}
    for name in MODULES:
        module = importlib.import_module(f"akto_collector.{name}")
        path = module.__file__ or ""
        if path.endswith(".py"):
            out[name] = "interpreted"
            continue
        built = os.stat(path).st_mtime
        base = os.path.join(os.path.dirname(path), name)
        sources = [base + ext for ext in (".py", ".pxd") if os.path.exists(base + ext)]
        out[name] = "stale" if any(os.stat(s).st_mtime > built for s in sources) else "compiled"
    return out


def summary(status: dict[str, str] | None = None) -> str:
    """"compiled", "interpreted", or e.g. "mixed (stale: http1)"."""
    status = module_status() if status is None else status
    kinds = set(status.values())
    if len(kinds) == 1:
        return kinds.pop()
    odd = sorted(n for n, s in status.items() if s != "compiled")
    return "mixed (" + ", ".join(f"{status[n]}: {n}" for n in odd) + ")"
