"""Pairs per second through PairFilter.check, with nothing configured and with
the guide's discovery rule plus both ignore rules (the worker calls it once
per pair). Run from the repo root: ``.venv/bin/python bench/bench_filters.py``.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from akto_collector.events import ROLE_SERVER, ConnId, Exchange, HttpRequest, HttpResponse  # noqa: E402
from akto_collector.filters import PairFilter, parse_discovery_config  # noqa: E402

SEED = '[{"key":{"eq":"x-forwarded-client-cert","ifAbsent":"reject"},"value":{"regex":".*bookinfo.*"}}]'


def rate(pf: PairFilter, ex: Exchange, n: int = 200_000) -> float:
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            pf.check(ex, peer_ip="10.0.0.2:5555")
        best = max(best, n / (time.perf_counter() - start))
    return best


def main() -> None:
    headers = [("Host", "svc:8080"), ("User-Agent", "curl/8"), ("Accept", "*/*")]
    headers += [(f"X-H{i}", "v" * 20) for i in range(12)]
    headers += [("x-forwarded-client-cert", "By=spiffe://cluster.local/ns/bookinfo/sa/x")]
    ex = Exchange(ConnId(1, 3, 1), ROLE_SERVER, False, HttpRequest("GET", "/", "HTTP/1.1", headers),
                  HttpResponse("HTTP/1.1", 200, "OK", []))
    plain = rate(PairFilter(), ex)
    full = rate(PairFilter(parse_discovery_config(SEED), True, True), ex)
    print(f"filter, nothing configured:           {plain:12,.0f} pairs/s ({1e6 / plain:.2f} µs/pair)")
    print(f"filter, seed rule + both ignore rules: {full:12,.0f} pairs/s ({1e6 / full:.2f} µs/pair)")


if __name__ == "__main__":
    main()
