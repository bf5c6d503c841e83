"""How long the process scanner takes over this host's /proc: the first full
scan (every ELF file analysed) and the following ones (cached by file
identity). Run from the repo root as root: ``.venv/bin/python bench/bench_scanner.py``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from akto_collector.supervisor.scanner import ProcessScanner  # noqa: E402


def main() -> None:
    s = ProcessScanner(ignore_pids={os.getpid()})
    first = s.scan()
    later = [s.scan() for _ in range(5)]
    best = min(r.duration for r in later)
    print(f"first full scan: {first.duration * 1000:8.1f} ms over {first.scanned} processes, "
          f"{len(first.libraries)} TLS files found")
    print(f"later full scans: {best * 1000:8.1f} ms best of 5 ({best * 1e6 / max(1, later[0].scanned):.0f} µs/process)")


if __name__ == "__main__":
    main()
