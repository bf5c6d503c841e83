"""The operator's view of the counters: totals, the stats line, the heartbeat.

Counters are ``Counter`` objects keyed by dotted reason names. The
supervisor's own, the kernel's, and each worker's last report add up to the
totals; a replaced worker's last counters are kept in ``retired``, so totals
only go up.
"""

from __future__ import annotations

import time
from collections import Counter

import orjson

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


def dropped_items(total: Counter) -> int:
    """The drops that count things (records, requests, calls, connections),
    for the one-figure status line: those in bytes or milliseconds would swamp them."""
    return sum(v for k, v in drops(total).items() if not k.endswith(("_bytes", "_ms")))


def worker_fields(workers) -> list[dict]:
    return [{"worker": w.index, "pid": w.pid, "connections": w.last_report.get("connections", 0),
             "buffered": w.last_report.get("buffered", 0), "queue": w.queue.qsize(),
             "queued_bytes": w.queued_bytes, "sink": w.last_report.get("sink", "")} for w in workers]


def daemon_pod_name(settings) -> str:
    """How Akto's own collector names itself in heartbeats ("akto-tc:<pod>:<node>")."""
    if settings.pod_name and settings.node_name:
        return f"akto-tc:{settings.pod_name}:{settings.node_name}"
    return f"akto-tc:{settings.pod_name or settings.node_name}"


def heartbeat_payload(settings, total: Counter, started: float, restarts, uprobes: int, memory: int) -> dict:
    """The heartbeat as Akto's collector sends it (every value a string; the
    runtime reads daemonId, moduleType, daemonPodName, timestamp), with our
    figures in ``additionalData`` (a JSON object string, as theirs)."""
    now = time.time()
    extra = {
        "version": __version__,
        "node": settings.node_name,
        "uptime_seconds": int(now - started),
        "restarts": dict(restarts),
        "uprobe_files": uprobes,
        "memory_bytes": memory,
        "pairs": total.get("pairs", 0),
        "dropped": drops(total),
        "counters": dict(total),
    }
    return {
        "type": "heartbeat",
        "daemonId": settings.daemonset_id,
        "daemonPodName": daemon_pod_name(settings),
        "timestamp": str(int(now)),
        "moduleType": "TRAFFIC_COLLECTOR",
        "imageVersion": settings.image_version,
        "additionalData": orjson.dumps(extra).decode(),
    }
