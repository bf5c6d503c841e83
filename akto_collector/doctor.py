"""`akto-collector doctor`: what this host lacks to run the collector."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def run_checks(settings) -> int:
    checks = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append(ok)
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")

    check("root", os.geteuid() == 0, "uid 0 needed to load BPF programs")
    try:
        import bcc  # noqa: F401

        check("bcc", True, "python3-bpfcc importable")
    except ImportError as exc:
        check("bcc", False, f"{exc}: install Debian's python3-bpfcc and use a venv with system site packages")
    release = platform.release()
    build = Path("/lib/modules") / release / "build"
    check("kernel headers", (build / "include").exists() or any(Path("/usr/src").glob("linux-headers-*")),
          f"{build} or /usr/src/linux-headers-* (the nearest is used when {release}'s are missing)")
    check("tracefs", Path("/sys/kernel/tracing/events/syscalls").exists(), "mounted at /sys/kernel/tracing")
    check("btf", Path("/sys/kernel/btf/vmlinux").exists(), "/sys/kernel/btf/vmlinux (saved user registers)")
    check("sock tracepoints", Path("/sys/kernel/tracing/events/sock/sock_recv_length").exists(),
          "sock:sock_recv_length (Linux 6.3+) marks socket I/O")
    from akto_collector.compiled import module_status, summary

    status = module_status()
    core = summary(status)
    check("core", "stale" not in status.values(),
          f"{core}" + (" (rebuild: make setup, or pip install .)" if "stale" in status.values() else
                       " (plain Python costs about 25% more CPU per pair: install Cython and a C compiler)"
                       if core != "compiled" else ""))
    sink = ",".join(settings.kafka_brokers) or "JSON lines on stdout"
    print(f"info output: {sink}")
    return 0 if all(checks) else 1
