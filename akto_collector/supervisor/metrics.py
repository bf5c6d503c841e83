"""The counters and gauges in Prometheus' text format (prometheus_client).

The supervisor's loop builds a ``Snapshot`` once a second (totals of every
counter, the workers' last reports, ring buffer fill, memory); the HTTP
thread only reads the latest snapshot, so a scrape never touches a Counter
the loop is changing. Names follow Prometheus' conventions:

- ``akto_collector_pairs_total{protocol,direction}``: pairs sent on;
- ``akto_collector_dropped_total{reason}``: one reason per drop counter of the
  stats line (every counter whose name contains "dropped");
- ``akto_collector_events_total{name}``: every other counter of the stats line;
- ``akto_collector_restarts_total{cause}``: memory, reload, worker;
- gauges: connections tracked and bytes buffered per worker, queue depths,
  sink state, uprobes attached, processes covered, ring buffer fill, memory
  per process, ready and healthy.

Counters only go up: a replaced worker's last counts stay in the totals, and
the totals cross a memory restart or a reload (the exec carries them).
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from akto_collector.worker import PAIR_PROTOCOLS

_SINK_UP = {"open", "connected"}


class Snapshot:
    """What one scrape shows: plain data, built by the loop, read by the HTTP thread."""

    __slots__ = ("counters", "workers", "uprobes", "processes_covered", "ring_fill", "memory", "restarts",
                 "ready", "healthy", "bpf_memory", "working_set")

    def __init__(self, counters=None, workers=(), uprobes=0, processes_covered=0, ring_fill=0.0, memory=None,
                 restarts=None, ready=False, healthy=False, bpf_memory=0, working_set=None):
        self.counters = dict(counters or {})
        self.workers = list(workers)  # dicts: worker, pid, connections, buffered, queue, queued_bytes, sink
        self.uprobes = uprobes
        self.processes_covered = processes_covered
        self.ring_fill = ring_fill
        self.memory = dict(memory or {})  # process name -> bytes
        self.restarts = dict(restarts or {})  # cause -> count
        self.ready = ready
        self.healthy = healthy
        self.bpf_memory = bpf_memory  # the BPF maps and ring buffer: charged to the cgroup, in no RSS
        self.working_set = working_set  # the cgroup's, when it holds only the collector (kubectl top)


class SnapshotCollector(Collector):
    """A prometheus_client collector reading whatever snapshot ``source()`` returns."""

    def __init__(self, source) -> None:
        self._source = source

    def collect(self):
        snap: Snapshot = self._source()
        pairs = CounterMetricFamily("akto_collector_pairs", "Request/response pairs sent on, by protocol and "
                                    "direction (1 served, 2 made)", labels=["protocol", "direction"])
        dropped = CounterMetricFamily("akto_collector_dropped", "What was lost, by reason (the counters of the "
                                      "stats line whose name says dropped)", labels=["reason"])
        events = CounterMetricFamily("akto_collector_events", "Every other counter of the stats line, by name",
                                     labels=["name"])
        for name, value in sorted(snap.counters.items()):
            parts = name.split(".")
            if parts[0] == "pairs" and len(parts) == 3 and parts[1] in PAIR_PROTOCOLS:  # worker.pairs_key
                pairs.add_metric([parts[1], parts[2]], value)
            elif "dropped" in name:
                dropped.add_metric([name], value)
            else:
                events.add_metric([name], value)
        yield pairs
        yield dropped
        yield events
        restarts = CounterMetricFamily("akto_collector_restarts", "Restarts by cause", labels=["cause"])
        for cause in ("memory", "reload", "worker"):
            restarts.add_metric([cause], snap.restarts.get(cause, 0))
        yield restarts

        labels = ["worker"]
        conns = GaugeMetricFamily("akto_collector_connections", "Connections tracked by each worker", labels=labels)
        buffered = GaugeMetricFamily("akto_collector_buffered_bytes", "Bytes held by each worker's streams and "
                                     "sink", labels=labels)
        queue = GaugeMetricFamily("akto_collector_queue_batches", "Batches queued for each worker", labels=labels)
        queued = GaugeMetricFamily("akto_collector_queue_bytes", "Bytes queued for each worker", labels=labels)
        sink = GaugeMetricFamily("akto_collector_sink_up", "1 while the worker's sink is open or connected",
                                 labels=labels)
        for w in snap.workers:
            key = [str(w["worker"])]
            conns.add_metric(key, w.get("connections", 0))
            buffered.add_metric(key, w.get("buffered", 0))
            queue.add_metric(key, w.get("queue", 0))
            queued.add_metric(key, w.get("queued_bytes", 0))
            sink.add_metric(key, 1 if w.get("sink") in _SINK_UP else 0)
        yield from (conns, buffered, queue, queued, sink)

        yield GaugeMetricFamily("akto_collector_uprobe_files", "Files (libraries, executables) with TLS uprobes "
                                "attached", value=snap.uprobes)
        yield GaugeMetricFamily("akto_collector_processes_covered", "Processes whose TLS library is probed",
                                value=snap.processes_covered)
        yield GaugeMetricFamily("akto_collector_ring_buffer_fill_ratio", "Most of the ring buffer found in use "
                                "since the previous snapshot", value=snap.ring_fill)
        memory = GaugeMetricFamily("akto_collector_memory_bytes", "Private memory of each process of the "
                                   "collector", labels=["process"])
        for process, value in sorted(snap.memory.items()):
            memory.add_metric([process], value)
        yield memory
        yield GaugeMetricFamily("akto_collector_bpf_memory_bytes", "The BPF maps and ring buffer: charged to the "
                                "memory cgroup, in no process's RSS", value=snap.bpf_memory)
        if snap.working_set is not None:
            yield GaugeMetricFamily("akto_collector_cgroup_working_set_bytes", "The working set of the collector's "
                                    "own cgroup (what kubectl top shows; what a memory limit acts on)",
                                    value=snap.working_set)
        yield GaugeMetricFamily("akto_collector_ready", "1 when every probe is attached and the sink is usable",
                                value=1 if snap.ready else 0)
        yield GaugeMetricFamily("akto_collector_healthy", "1 while the supervisor's loop runs",
                                value=1 if snap.healthy else 0)
