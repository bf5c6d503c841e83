"""End to end: nginx under wrk load, the collector capturing, pairs into a
real Kafka-protocol broker (Tansu), all on this machine.

Prints requests/s served, pairs/s delivered, loss (requests − pairs
delivered, with the collector's own drop counters beside it), and the
collector's CPU and RSS. With --tls the same against nginx with TLS
(uprobes), and --baseline first measures nginx without the collector, to
show the overhead on the traced server; --sink null writes JSON lines to
/dev/null instead (the cost of Kafka, by difference).

    .venv/bin/python bench/bench_e2e.py [--seconds 10] [--connections 32] [--rate N] [--tls] [--baseline]
                                        [--cpu-cap 0.5] [--sink null]

--rate paces each connection (wrk's delay() between requests, in whole
milliseconds), so the rate offered is only roughly N: the printed
requests/s served is what counts. `--rate 96000 --connections 96` (1 ms
per connection) offers about 30,000/s here. "Kept pace" is read from the
collector's own stats: workers report once a second, so a last pair
counted 1-2 s after the load ended means no backlog built up.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from broker import TansuBroker, free_port  # noqa: E402

BODY = '{"items":[' + ",".join('{"id":%d,"name":"item-%d","price":%d.99}' % (i, i, i) for i in range(38)) + "]}"


def start_nginx(tmp: Path, port: int, tls: bool) -> subprocess.Popen:
    ssl_lines = ""
    if tls:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                        "/CN=localhost", "-keyout", str(tmp / "k.pem"), "-out", str(tmp / "c.pem")],
                       check=True, capture_output=True)
        ssl_lines = f"ssl_certificate {tmp}/c.pem; ssl_certificate_key {tmp}/k.pem;"
    (tmp / "nginx.conf").write_text(f"""
daemon off; worker_processes 1; error_log {tmp}/error.log; pid {tmp}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off; keepalive_requests 1000000;
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  server {{
    listen 127.0.0.1:{port} {"ssl" if tls else ""}; {ssl_lines}
    location / {{ default_type application/json; return 200 '{BODY}'; }}
  }}
}}
""")
    proc = subprocess.Popen(["/usr/sbin/nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp)])
    time.sleep(0.5)
    return proc


def wrk(url: str, seconds: int, connections: int, rate: int = 0) -> tuple[int, float]:
    """Max load, or about `rate` requests/s (each connection waits its share between requests)."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url]
    if rate:
        script = Path(tempfile.mkdtemp()) / "rate.lua"
        script.write_text(f"function delay() return {connections * 1000.0 / rate:.3f} end\n")
        cmd[1:1] = ["-s", str(script)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return total, rate


def pairs_done(log: Path) -> tuple[int, float]:
    """The collector's pair count, and the wall time of the first stats line that showed it."""
    import datetime

    import orjson

    value, when = 0, 0.0
    for line in log.read_bytes().splitlines():
        if b'"stats"' in line:
            rec = orjson.loads(line)
            if rec.get("pairs", 0) != value:
                value = rec.get("pairs", 0)
                when = datetime.datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp()
    return value, when


def cpu_cap(cores: float):
    """A cpu cgroup with a quota, and the function that moves the collector
    into it before it starts (so that it sizes itself to the quota)."""
    cg = Path(f"/sys/fs/cgroup/cpu/akto-bench-{os.getpid()}")
    cg.mkdir(exist_ok=True)
    (cg / "cpu.cfs_period_us").write_text("100000")
    (cg / "cpu.cfs_quota_us").write_text(str(int(cores * 100000)))
    print(f"collector held to {cores} cores (cgroup {cg})")
    procs = str(cg / "cgroup.procs")

    def enter() -> None:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))

    return enter


def tree(pid: int) -> list[psutil.Process]:
    p = psutil.Process(pid)
    return [p] + p.children(recursive=True)


def cpu_seconds(procs) -> float:
    """CPU time of these processes: each live thread's run time from the
    scheduler (/proc/PID/task/TID/schedstat, in ns), not utime + stime, which
    count in 10 ms ticks: ±6% of nginx's CPU over a 4 s window at 2k req/s.
    Threads that have exited are added in ticks (what the process's utime +
    stime holds beyond its live threads'); a kernel without schedstat gets
    ticks throughout."""
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            tids = os.listdir(f"/proc/{p.pid}/task")
        except (psutil.Error, OSError):
            continue
        run = ticks = 0.0
        for tid in tids:
            try:
                with open(f"/proc/{p.pid}/task/{tid}/schedstat", "rb") as f:
                    run += int(f.read().split()[0]) / 1e9
                with open(f"/proc/{p.pid}/task/{tid}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                ticks += (int(fields[11]) + int(fields[12])) / TICKS
            except (OSError, ValueError, IndexError):
                run = None
                break
        whole = t.user + t.system
        total += whole if run is None else run + max(0.0, whole - ticks)
    return total


TICKS = os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rate", type=int, default=0, help="about this many requests/s (default: as fast as possible)")
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--baseline", action="store_true")
    ap.add_argument("--workers", default="", help="AKTO_WORKERS (default: the collector's own choice)")
    ap.add_argument("--sink", choices=("kafka", "null"), default="kafka",
                    help="null: JSON lines to /dev/null instead of the broker (the cost of Kafka, by difference)")
    ap.add_argument("--env", action="append", default=[], metavar="K=V", help="extra collector environment")
    ap.add_argument("--cpu-cap", type=float, default=0.0,
                    help="hold the collector to this many cores by a cgroup v1 cpu quota (a DaemonSet's limits.cpu)")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk missing: make test-deps installs it")
    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    port = free_port()
    url = f"{'https' if args.tls else 'http'}://127.0.0.1:{port}/api/items"
    nginx = start_nginx(tmp, port, args.tls)
    print(f"== {'TLS (uprobes)' if args.tls else 'plaintext'}: nginx, 1.5 KB JSON, wrk -t1 -c{args.connections} "
          f"-d{args.seconds}s, {os.cpu_count()} cores shared by load, server, collector and broker")
    try:
        server = tree(nginx.pid)
        if args.baseline:
            cpu_before = cpu_seconds(server)
            total, rate = wrk(url, args.seconds, args.connections, args.rate)
            per_req = (cpu_seconds(server) - cpu_before) / total * 1e6
            print(f"baseline (no collector): {rate:,.0f} requests/s, nginx CPU {per_req:.1f} us per request")
        with (TansuBroker(proxy=False) if args.sink == "kafka" else contextlib.nullcontext()) as broker:
            env = dict(os.environ, TRAFFIC_DISABLE_EGRESS="true",
                       AKTO_STATS_INTERVAL="0.5",
                       CAPTURE_ALL="false" if args.tls else "true")
            if broker is not None:
                env["AKTO_KAFKA_BROKER_MAL"] = broker.bootstrap
            if args.workers:
                env["AKTO_WORKERS"] = args.workers
            env.update(kv.split("=", 1) for kv in args.env)
            err = open(tmp / "collector.log", "wb")
            output = [] if broker is not None else ["--output", os.devnull]
            col = subprocess.Popen([sys.executable, "-m", "akto_collector", "run", *output], cwd=REPO, env=env,
                                   stdout=subprocess.DEVNULL, stderr=err,
                                   preexec_fn=cpu_cap(args.cpu_cap) if args.cpu_cap else None)
            deadline = time.monotonic() + 120
            while b'"ready"' not in (tmp / "collector.log").read_bytes():
                if col.poll() is not None or time.monotonic() > deadline:
                    sys.exit("collector failed:\n" + (tmp / "collector.log").read_text()[-3000:])
                time.sleep(0.2)
            time.sleep(1.0)
            procs = tree(col.pid)
            cpu0 = cpu_seconds(procs)
            each0 = [cpu_seconds([p]) for p in procs]
            wall0 = time.time()
            server_before = cpu_seconds(server)
            others = tree(broker._broker.pid) if broker is not None else []
            others_before = cpu_seconds(others)
            load_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            total, rate = wrk(url, args.seconds, args.connections, args.rate)
            wall_end = time.time()
            load_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            load_cpu = (load_after.ru_utime + load_after.ru_stime) - (load_before.ru_utime + load_before.ru_stime)
            server_per_req = (cpu_seconds(server) - server_before) / total * 1e6
            rss = sum(p.memory_info().rss for p in procs if p.is_running())
            # Wait until the collector has caught up (its pair count stops growing).
            last = -1
            while True:
                time.sleep(2.0)
                pairs, done = pairs_done(tmp / "collector.log")
                if pairs == last:
                    break
                last = pairs
            elapsed = done - wall0
            cpu1 = cpu_seconds(procs)
            broker_cpu = cpu_seconds(others) - others_before
            each = [(cpu_seconds([p]) - c0) / elapsed * 100 for p, c0 in zip(procs, each0)]
            print(f"with collector: {rate:,.0f} requests/s served ({total:,} requests), "
                  f"nginx CPU {server_per_req:.1f} us per request")
            col.send_signal(signal.SIGTERM)
            try:
                col.wait(60)
            except subprocess.TimeoutExpired:
                print("collector did not stop within 60 s; its last log lines:")
                print("\n".join((tmp / "collector.log").read_text().splitlines()[-8:])[-3000:])
                col.kill()
            err.close()
            t1 = time.monotonic()
            drops, delivered, records, ring_peak = {}, 0, 0, 0.0
            import orjson
            for line in (tmp / "collector.log").read_bytes().splitlines():
                rec = orjson.loads(line)
                ring_peak = max(ring_peak, rec.get("ring_peak_pct", 0))
                if rec.get("event") == "stats_final":
                    drops = rec.get("drops", {})
                    delivered = rec.get("counters", {}).get("sink.delivered", 0)
                    records = rec.get("counters", {}).get("worker.records", 0)
            if broker is not None:
                got = broker.consume_all("akto.api.logs", timeout=300, idle=5.0)
                consumed = sum(1 for r in got if b"/api/items" in r.value)
            else:
                consumed = delivered
            print(f"pairs delivered to {'the broker' if broker is not None else '/dev/null'}: {consumed:,} of {total:,} requests "
                  f"({consumed / elapsed:,.0f} pairs/s, load start to last pair; lost {max(0, total - consumed):,}"
                  f"{'' if consumed <= total else f', {consumed - total} in flight when wrk stopped'}); "
                  f"consumed back in {time.monotonic() - t1:.1f}s")
            print(f"the last pair was counted {done - wall_end:.1f} s after the load ended (workers report each second:"
                  f" 1-2 s means the collector kept pace)")
            print(f"collector drop counters: {drops or 'none'}; ring buffer at most {ring_peak}% full")
            print(f"collector CPU, load start to last pair: {(cpu1 - cpu0) / elapsed * 100:.0f}% of one core; "
                  f"RSS {rss / 1e6:.0f} MB (supervisor + workers)")
            print(f"  of which supervisor {each[0]:.0f}%, workers " + ", ".join(f"{c:.0f}%" for c in each[1:]))
            if consumed:
                per_pair = [c / 100 * elapsed / consumed * 1e6 for c in each]
                print(f"collector CPU per pair: {sum(per_pair):.1f} us (supervisor {per_pair[0]:.1f} us, "
                      f"workers {sum(per_pair[1:]):.1f} us; load start to last pair, idle time included); "
                      f"{records / consumed:.2f} kernel records per pair")
            print(f"sharing the cores: wrk {load_cpu / args.seconds * 100:.0f}% during the load"
                  + (f", broker {broker_cpu / elapsed * 100:.0f}%" if broker is not None else ""))
    finally:
        nginx.terminate()
        nginx.wait(5)
        shutil.copy(tmp / "collector.log", "/tmp/last-collector.log") if (tmp / "collector.log").exists() else None
        shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(OSError):
            Path(f"/sys/fs/cgroup/cpu/akto-bench-{os.getpid()}").rmdir()


if __name__ == "__main__":
    main()
