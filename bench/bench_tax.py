"""What the traced node pays, side by side in one run: the same load without
the collector, with it on the sock-tracepoint path, and with it on the
syscall fallback (AKTO_SOCK_TRACEPOINTS=off), alternated over rounds.

- a non-socket call: `dd` moving 64-byte blocks from /dev/zero to /dev/null
  (a read and a write per block), ns per call;
- nginx at fixed rates (2k and 10k requests/s offered by wrk, 1.5 KB JSON):
  nginx's CPU per request, and p50/p99 latency.

    .venv/bin/python bench/bench_tax.py [--rounds 6] [--seconds 4] [--tls] [--tree DIR ...]

Beside nginx's figures, the collector's own CPU per pair at each rate.
``--tree DIR``: also the sock path run from another checkout (its compiled
modules built in place), alternated in the same rounds.

nginx's CPU moves by ±20% between rounds on a shared host, more than the
collector's tax, so each run with the collector is paired with the same
round's run without it (the round's first): the figure is the median of
those per-round ratios (their range beside it), and the best round's too.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_e2e import REPO, cpu_seconds, free_port, start_nginx, tree  # noqa: E402

MODES = (("none", None), ("sock", "auto"), ("syscall", "off"))
BLOCKS = 1_000_000


def dd_ns_per_call() -> float:
    t = time.perf_counter()
    subprocess.run(["dd", "if=/dev/zero", "of=/dev/null", "bs=64", f"count={BLOCKS}"], check=True,
                   capture_output=True)
    return (time.perf_counter() - t) / (2 * BLOCKS) * 1e9


def wrk_fixed(url: str, rate: int, seconds: int, connections: int = 20) -> tuple[int, float, float]:
    """(requests, p50 ms, p99 ms) at about `rate` requests/s."""
    script = Path(tempfile.mkdtemp()) / "rate.lua"
    script.write_text(f"function delay() return {connections * 1000.0 / rate:.3f} end\n")
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    return total, pct("50"), pct("99")


def start_collector(tmp: Path, setting: str, tls: bool, cwd: Path = REPO) -> subprocess.Popen:
    log = tmp / f"collector-{setting}.log"
    env = dict(os.environ, TRAFFIC_DISABLE_EGRESS="true", AKTO_SOCK_TRACEPOINTS=setting, AKTO_METRICS_ADDR="",
               CAPTURE_ALL="false" if tls else "true")
    proc = subprocess.Popen([sys.executable, "-m", "akto_collector", "run", "--output", os.devnull], cwd=cwd,
                            env=env, stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    deadline = time.monotonic() + 120
    while b'"ready"' not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit("collector failed:\n" + log.read_text()[-3000:])
        time.sleep(0.2)
    time.sleep(1.0)
    return proc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--rates", default="2000,10000")
    ap.add_argument("--tree", action="append", default=[], help="another checkout's collector, beside this one's")
    args = ap.parse_args()
    modes = [(mode, setting, REPO) for mode, setting in MODES] + \
        [(f"sock@{Path(t).name}", "auto", Path(t).resolve()) for t in args.tree]
    if not shutil.which("wrk"):
        sys.exit("wrk missing: make test-deps installs it")
    rates = [int(r) for r in args.rates.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-tax-"))
    port = free_port()
    nginx = start_nginx(tmp, port, args.tls)
    url = f"{'https' if args.tls else 'http'}://127.0.0.1:{port}/api/items"
    server = tree(nginx.pid)
    results: dict[tuple[str, str], list] = {}
    try:
        for _ in range(args.rounds):
            for mode, setting, cwd in modes:
                col = start_collector(tmp, setting, args.tls, cwd) if setting else None
                collector = tree(col.pid) if col is not None else []
                try:
                    results.setdefault((mode, "dd"), []).append(dd_ns_per_call())
                    for rate in rates:
                        before, col_before = cpu_seconds(server), cpu_seconds(collector)
                        total, p50, p99 = wrk_fixed(url, rate, args.seconds)
                        per_req = (cpu_seconds(server) - before) / total * 1e6
                        col_per_pair = (cpu_seconds(collector) - col_before) / total * 1e6
                        results.setdefault((mode, rate), []).append((per_req, p50, p99, total / args.seconds,
                                                                     col_per_pair))
                finally:
                    if col is not None:
                        col.terminate()
                        col.wait(60)
    finally:
        nginx.terminate()
        nginx.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"== the node's tax, {args.rounds} rounds alternated, {os.cpu_count()} cores shared"
          f" ({'TLS' if args.tls else 'plaintext'})")
    base = min(results[("none", "dd")])
    for mode, _, _ in modes:
        ns = min(results[(mode, "dd")])
        print(f"  {mode:<8} non-socket read/write (dd bs=64): {ns:6.0f} ns per call"
              + ("" if mode == "none" else f"  (+{ns - base:.0f} ns, {ns / base:.2f}x)"))
    for rate in rates:
        base_rounds = results[("none", rate)]
        b = min(base_rounds)
        for mode, _, _ in modes:
            per_req, p50, p99, served, _ = min(results[(mode, rate)])
            line = (f"  {mode:<8} nginx at {rate:>6}/s offered ({served:,.0f}/s served): {per_req:5.1f} us CPU per "
                    f"request, p50 {p50:.2f} ms, p99 {p99:.2f} ms")
            if mode != "none":
                ratios = sorted(r[0] / n[0] for r, n in zip(results[(mode, rate)], base_rounds))
                p99s = sorted(r[2] / n[2] for r, n in zip(results[(mode, rate)], base_rounds))
                pairs = statistics.median(r[4] for r in results[(mode, rate)])
                line += (f"  (CPU {statistics.median(ratios):.2f}x median of rounds, {ratios[0]:.2f}-{ratios[-1]:.2f};"
                         f" best rounds {per_req / b[0]:.2f}x; p99 {statistics.median(p99s):.2f}x;"
                         f" the collector {pairs:.1f} us CPU per pair, median)")
            print(line)


if __name__ == "__main__":
    main()
