"""The supervisor's decisions, with stand-ins for worker processes and the kernel:
a dead worker is replaced and what it held counted, a stuck one is terminated
then killed, one that cannot boot stops the collector, a slot that keeps
crashing backs off; reloads are validated first."""

from __future__ import annotations

import time
from collections import Counter

import structlog
import structlog.testing

from akto_collector import exits
from akto_collector.config import Settings
from akto_collector.supervisor import arbiter as arbiter_mod
from akto_collector.supervisor.arbiter import Arbiter
from akto_collector.supervisor.reexec import STATE_VAR, ExecState


class FakeProcess:
    pids = iter(range(5000, 6000))

    def __init__(self, target=None, name="", args=(), daemon=False):
        self.pid = None
        self.exitcode = None
        self.alive = False
        self.signals: list[str] = []

    def start(self):
        self.pid = next(FakeProcess.pids)
        self.alive = True

    def is_alive(self):
        return self.alive

    def die(self, code):
        self.alive, self.exitcode = False, code

    def terminate(self):
        self.signals.append("TERM")  # a stuck worker may not die of it

    def kill(self):
        self.signals.append("KILL")
        self.die(-9)

    def join(self, timeout=None):
        pass


class FakeConn:
    def __init__(self):
        self.reports: list[dict] = []
        self.closed = False

    def poll(self):
        return bool(self.reports)

    def recv(self):
        return self.reports.pop(0)

    def send_bytes(self, blob):
        if self.closed:
            raise OSError("closed")

    def close(self):
        self.closed = True


class FakeContext:
    def __init__(self):
        self.processes: list[FakeProcess] = []

    def Pipe(self, duplex=False):  # noqa: N802 (multiprocessing's name)
        return FakeConn(), FakeConn()

    def Process(self, **kwargs):  # noqa: N802
        p = FakeProcess(**kwargs)
        self.processes.append(p)
        return p


class FakeRing:
    size = 1 << 20

    def pending_bytes(self):
        return 0


class FakeProbes:
    ring = FakeRing()

    def __init__(self):
        self.ignored: set[int] = set()

    def ignore_pid(self, pid):
        self.ignored.add(pid)

    def unignore_pid(self, pid):
        self.ignored.discard(pid)

    def counters(self):
        return {}


def make(workers=2, **env) -> Arbiter:
    settings = Settings(workers=workers, node_name="n", daemonset_id="ds", metrics_addr="")
    a = Arbiter(settings, "-", structlog.get_logger(), ctx=FakeContext(), env=env)
    a.probes = FakeProbes()
    a.workers = [a.spawn_worker(i) for i in range(workers)]
    for w in a.workers:
        a.probes.ignore_pid(w.pid)
    return a


def test_a_dead_worker_is_replaced_and_what_it_held_is_counted():
    a = make()
    dead = a.workers[0]
    dead.report_rx.reports.append({"connections": 7, "sink_messages": 3, "buffered": 10,
                                   "counters": {"pairs": 40, "worker.records": 90}})
    a.manage_workers()  # reads the report
    dead.submit(b"x" * 100, records=5)
    dead.process.die(-9)
    a.manage_workers()
    new = a.workers[0]
    assert new is not dead and new.process.is_alive() and new.pid != dead.pid
    assert dead.pid not in a.probes.ignored and new.pid in a.probes.ignored
    total = a.totals()
    assert total["pairs"] == 40  # what the dead worker counted stays in the totals
    assert total["worker_died.dropped_connections"] == 7
    assert total["worker_died.dropped_messages"] == 3
    assert total["worker_died.dropped_records"] == 5
    assert a.restarts["worker"] == 1
    assert dead.report_rx.closed and dead.data_tx.closed  # pipes released


def test_a_stuck_worker_is_terminated_then_killed_then_replaced():
    a = make()
    stuck = a.workers[1]
    proc = stuck.process
    stuck.last_seen = time.monotonic() - arbiter_mod.WORKER_STALL_SECONDS - 1
    a.manage_workers()
    assert proc.signals == ["TERM"] and a.workers[1] is stuck
    assert a.counters["supervisor.worker_stalled"] == 1
    stuck.terminated_at -= arbiter_mod.WORKER_KILL_GRACE + 1  # it ignored SIGTERM for the grace period
    a.manage_workers()
    assert proc.signals == ["TERM", "KILL"]
    assert a.workers[1] is not stuck and a.workers[1].process.is_alive()


def test_a_worker_that_cannot_boot_stops_the_collector_with_its_code():
    a = make()
    a.workers[0].process.die(exits.WORKER_BOOT)
    a.manage_workers()
    assert a.stopping and a.exit_code == exits.WORKER_BOOT
    assert a.workers[0].process.exitcode == exits.WORKER_BOOT  # not respawned


def test_a_slot_that_keeps_crashing_backs_off():
    a = make(workers=1)
    a.workers[0].process.die(1)
    a.manage_workers()
    assert a.workers[0].process.is_alive()  # the first crash: replaced at once
    a.workers[0].process.die(1)
    a.manage_workers()
    assert a.workers[0].process is None  # the second: after a wait
    assert a.respawn_at[0] > time.monotonic()
    a.workers[0].submit(b"y" * 10, records=2)  # meanwhile its shard's records are queued ...
    a.respawn_at[0] = time.monotonic() - 1
    a.manage_workers()
    assert a.workers[0].process.is_alive()
    assert a.crashes[0] == 2
    assert a.workers[0].queued_bytes == 10  # ... and handed to the new worker


def test_reload_refuses_a_bad_file_and_keeps_running(tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("TRAFFIC_MAX_ACTIVE_CONN=lots\n")
    a = make(AKTO_ENV_FILE=str(env_file))
    a.reload()
    assert a.restart is None and not a.stopping
    assert a.counters["supervisor.reload_refused"] == 1


def test_reload_with_a_good_file_restarts_with_it_over_the_starting_environment(tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("# the operator's changes\nTRAFFIC_MAX_ACTIVE_CONN=100\nAKTO_LOG_LEVEL='debug'\n")
    # The running image was started with the file's older content over a base that had no such variables.
    state = ExecState(file_vars={"TRAFFIC_MAX_ACTIVE_CONN": None, "AKTO_WORKERS": "2"})
    a = make(AKTO_ENV_FILE=str(env_file), TRAFFIC_MAX_ACTIVE_CONN="50", AKTO_WORKERS="3",
             **{STATE_VAR: state.encode()})
    a.reload()
    assert a.restart is not None and a.stopping
    cause, env = a.restart
    assert cause == "reload" and a.restarts["reload"] == 1
    assert env["TRAFFIC_MAX_ACTIVE_CONN"] == "100" and env["AKTO_LOG_LEVEL"] == "debug"
    assert env["AKTO_WORKERS"] == "2"  # the file no longer sets it: back to the starting value
    crossing = ExecState.from_env(a.restart_env())
    assert crossing.restarts == {"reload": 1}
    assert crossing.file_vars == {"TRAFFIC_MAX_ACTIVE_CONN": None, "AKTO_LOG_LEVEL": None}


def test_sighup_without_an_env_file_logs_the_stats():
    a = make()
    a.log = structlog.get_logger()
    with structlog.testing.capture_logs() as logs:
        a.reload()
    assert a.restart is None
    assert {"reload_skipped", "stats"} <= {e["event"] for e in logs}


def test_counters_and_restarts_cross_the_exec():
    a = make()
    a.counters["pairs"] = 10
    a.request_restart("memory", {"PATH": "/bin"})
    env = a.restart_env()
    b = make(**env)
    assert b.totals()["pairs"] == 10 and b.restarts["memory"] == 1
    assert isinstance(b.retired, Counter)


def test_the_drain_waits_for_a_batch_at_the_rate_just_seen_within_its_bounds():
    wait, ring = arbiter_mod.drain_wait, 64 << 20
    lo, hi, batch = arbiter_mod.DRAIN_INTERVAL_MS, arbiter_mod.IDLE_DRAIN_INTERVAL_MS, arbiter_mod.DRAIN_BATCH_BYTES
    assert wait(0, 0.01, ring) == hi  # an empty ring: the longest wait
    assert wait(batch // 2, 0.01, ring) == 20  # half a batch in 10 ms: wait 20 ms for a whole one
    assert wait(batch, 0.001, ring) == lo  # heavy traffic: the shortest
    assert wait(1, 0.01, ring) == hi  # a trickle: the longest
    # A small ring: a batch is an eighth of it, so the pace quickens with the ring.
    assert wait(32 << 10, 0.005, 1 << 20) == 20 and wait(32 << 10, 0.005, ring) == hi


def test_a_smaller_ring_waits_less_so_that_a_burst_during_the_wait_still_fits():
    longest, hi, floor = arbiter_mod.longest_wait, arbiter_mod.IDLE_DRAIN_INTERVAL_MS, arbiter_mod.IDLE_DRAIN_FLOOR_MS
    assert longest(64 << 20) == hi and longest(1 << 30) == hi  # the default ring, and larger: the longest
    assert longest(32 << 20) == hi // 2  # half the ring holds the same burst for half as long
    assert longest(1 << 20) == floor  # never quicker than the floor
    assert arbiter_mod.drain_wait(0, 0.01, 16 << 20) == floor  # an empty small ring


def test_the_time_a_restart_captured_nothing_is_counted_by_the_next_image():
    a = make()
    a.request_restart("memory", {"PATH": "/bin"})
    a.detached_at = 1000.0  # as shutdown sets it, detaching the programs
    b = make(**a.restart_env())
    b.count_restart_gap(1012.5)  # ready again 12.5 s later
    assert b.totals()["supervisor.dropped.restart_gap_ms"] == 12500
    b.count_restart_gap(1020.0)  # counted once
    assert b.totals()["supervisor.dropped.restart_gap_ms"] == 12500
    c = make()  # a first start: nothing was captured before it either, but nothing was lost by a restart
    c.count_restart_gap(1.0)
    assert "supervisor.dropped.restart_gap_ms" not in c.totals()
