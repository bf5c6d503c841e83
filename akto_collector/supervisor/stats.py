"""The operator's view of the counters: totals, the stats line, the heartbeat.

Counters are ``Counter`` objects keyed by dotted reason names. The
supervisor's own, the kernel's, and each worker's last report add up to the
totals; a replaced worker's last counters are kept in ``retired``, so totals
only go up.
"""

from __future__ import annotations

import time
from collections import Counter

from akto_collector import __version__


def totals(retired: Counter, own: Counter, workers, kernel: dict[str, int]) -> Counter:
    total = Counter(retired)
    total.update(own)
    for w in workers:
        total.update(w.last_report.get("counters", {}))
        total["queue.dropped_records"] += w.dropped
    total.update(kernel)
    return total


def drops(total: Counter) -> dict[str, int]:
    """The counters that say something was lost (every one has "dropped" in its name)."""
    return {k: v for k, v in total.items() if "dropped" in k and v}


def worker_fields(workers) -> list[dict]:
    return [{"worker": w.index, "pid": w.pid, "connections": w.last_report.get("connections", 0),
             "buffered": w.last_report.get("buffered", 0), "queue": w.queue.qsize(),
             "queued_bytes": w.queued_bytes, "sink": w.last_report.get("sink", "")} for w in workers]


def heartbeat_payload(settings, total: Counter, started: float, restarts: int, uprobes: int) -> dict:
    now = time.time()
    return {
        "id": settings.daemonset_id,
        "node": settings.node_name,
        "pod": settings.pod_name,
        "version": __version__,
        "uptime": int(now - started),
        "restarts": restarts,
        "probes_attached": uprobes,
        "counters": dict(total),
        "ts": int(now),
    }
