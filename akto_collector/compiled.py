"""Which of the per-message modules run compiled, and whether a build is stale.

setup.py compiles ``MODULES`` with Cython where it can (about 25% less CPU
per pair); the package works the same as plain Python. A compiled module
whose source changed since it was built would run yesterday's code, so that
is reported (doctor, the ``ready`` log line) and refused by the test suite.
"Changed" is by content: setup.py writes each module's source hash to
``STAMPS`` when it compiles; file times would not do, since installing a
wheel writes the files in name order, the module before its source.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os

STAMPS = "_build_stamps.json"  # in the package directory, next to the modules

# The hot path, in data-flow order (docs/ARCHITECTURE.md, "Compiled core"):
# modules of the package, as dotted names below it.
MODULES = (
    "kernel.ringbuf",
    "supervisor.router",
    "events",
    "protocols.streams",
    "protocols.http1",
    "protocols.http1_reader",
    "protocols.http1_syntax",
    "protocols.h2frames",
    "protocols.hpack",
    "protocols.http2",
    "protocols.grpc",
    "protocols.bodies",
    "message",
    "filters",
    "worker",
    "sinks.jsonl",
    "sinks.kafka",
    "sinks.kafka_batches",
)
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def source_path(package_dir: str, name: str, ext: str = ".py") -> str:
    """Where module ``name`` (dotted, below the package) has its source."""
    return os.path.join(package_dir, *name.split(".")) + ext


def source_hash(package_dir: str, name: str) -> str:
    """The hash of a module's source: its .py and, if there is one, its .pxd."""
    digest = hashlib.sha256()
    for ext in (".py", ".pxd"):
        path = source_path(package_dir, name, ext)
        if os.path.exists(path):
            with open(path, "rb") as fh:
                digest.update(ext.encode() + b"\0" + fh.read() + b"\0")
    return digest.hexdigest()


def module_status() -> dict[str, str]:
    """Module name -> "compiled", "interpreted" or "stale" (compiled from other source)."""
    out = {}
    stamps: dict[str, str] | None = None
    for name in MODULES:
        module = importlib.import_module(f"akto_collector.{name}")
        path = module.__file__ or ""
        if path.endswith(".py"):
            out[name] = "interpreted"
            continue
        if stamps is None:
            try:
                with open(os.path.join(PACKAGE_DIR, STAMPS), encoding="utf-8") as fh:
                    stamps = json.load(fh)
            except (OSError, ValueError):
                stamps = {}
        same = stamps.get(name) == source_hash(PACKAGE_DIR, name)
        out[name] = "compiled" if same else "stale"
    return out


def summary(status: dict[str, str] | None = None) -> str:
    """"compiled", "interpreted", or e.g. "mixed (stale: http1)"."""
    status = module_status() if status is None else status
    kinds = set(status.values())
    if len(kinds) == 1:
        return kinds.pop()
    odd = sorted(n for n, s in status.items() if s != "compiled")
    return "mixed (" + ", ".join(f"{status[n]}: {n}" for n in odd) + ")"
