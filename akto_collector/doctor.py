"""`akto-collector doctor`: can this host run the collector, and what to fix.

Each check is a line: ``ok``, ``warn`` (capture works, with less) or ``FAIL``
(capture cannot work), and for each failure the exact fix. ``--json`` prints
the same as one JSON document. Exit 0 when capture can work, 1 otherwise.

The host is read through ``Host``, whose fields are the paths and probes the
checks use, so that a test can hand it a host with faults.
"""

from __future__ import annotations

import os
import platform
import socket
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import orjson

from akto_collector.addresses import split_host_port
from akto_collector.compiled import module_status, summary
from akto_collector.kernel import headers as kheaders

OK, WARN, FAIL = "ok", "warn", "fail"
# What the programs need of the kernel: the BPF ring buffer (5.8), the task's
# saved registers through BTF (bpf_task_pt_regs, 5.15).
MIN_KERNEL = (5, 15)
SOCK_KERNEL = (6, 3)  # sock:sock_{send,recv}_length
# Capability bits (linux/capability.h).
CAP_SYS_PTRACE, CAP_SYS_ADMIN, CAP_SYS_RESOURCE, CAP_PERFMON, CAP_BPF = 19, 21, 24, 38, 39


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def _caps_of_self() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def _compile_and_load(includes: list[str]) -> str | None:
    """A trivial program with a ring buffer, attached to a tracepoint and to a
    uprobe: None when all of it works, else what failed."""
    try:
        from bcc import BPF  # noqa: PLC0415 (the other checks run without bcc)
    except ImportError as exc:
        return f"bcc: {exc}"
    text = ("BPF_RINGBUF_OUTPUT(doctor_events, 1);\n"
            "int doctor_tp(void *ctx) { return 0; }\n"
            "int doctor_up(struct pt_regs *ctx) { return 0; }\n")
    try:
        b = BPF(text=text, cflags=includes)
    except Exception as exc:  # noqa: BLE001 (bcc raises bare Exception)
        return f"compiling a trivial program failed: {exc}"
    try:
        b.attach_tracepoint(tp="sched:sched_process_exec", fn_name=b"doctor_tp")
        b.attach_uprobe(name="c", sym="getpid", fn_name=b"doctor_up")
    except Exception as exc:  # noqa: BLE001
        return f"attaching a tracepoint or a uprobe failed: {exc}"
    finally:
        b.cleanup()
    return None


def _port_free(addr: str) -> str | None:
    host, port = split_host_port(addr)
    try:
        with socket.create_server((host or "0.0.0.0", int(port or 0))):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def _reachable(addr: str, timeout: float = 3.0) -> str | None:
    host, port = split_host_port(addr)  # brokers are validated host:port (config)
    try:
        socket.create_connection((host, int(port or 9092)), timeout=timeout).close()
        return None
    except OSError as exc:
        return exc.strerror or str(exc)


def _tls_coverage(settings) -> tuple[Counter, int]:
    from akto_collector.supervisor.scanner import ProcessScanner  # noqa: PLC0415

    result = ProcessScanner(probe_all_pid=settings.probe_all_pid, ignore_pids={os.getpid()}).scan()
    per_kind: Counter = Counter()
    for lib in result.libraries.values():
        per_kind[lib.kind] += len(lib.pids)
    return per_kind, len(result.unsupported)


@dataclass
class Host:
    """What the checks read; every field can be replaced to simulate a fault."""

    release: str = field(default_factory=platform.release)
    euid: int = field(default_factory=os.geteuid)
    caps: int = field(default_factory=_caps_of_self)
    tracefs: Path = kheaders.TRACEFS
    debugfs_tracing: Path = Path("/sys/kernel/debug/tracing")
    btf: Path = Path("/sys/kernel/btf/vmlinux")
    find_headers: Callable[[str], kheaders.Headers] = kheaders.find_kernel_headers
    compile_and_load: Callable[[list[str]], str | None] = _compile_and_load
    port_free: Callable[[str], str | None] = _port_free
    reachable: Callable[[str], str | None] = _reachable
    tls_coverage: Callable = _tls_coverage
    core_status: Callable[[], dict] = module_status


def _version(release: str) -> tuple[int, int]:
    parts = release.split("-")[0].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return (0, 0)


def checks(settings, host: Host | None = None) -> list[Check]:
    h = host or Host()
    out: list[Check] = []

    def add(name: str, status: str, detail: str, fix: str = "") -> None:
        out.append(Check(name, status, detail, fix))

    v = _version(h.release)
    if v >= MIN_KERNEL:
        add("kernel", OK, f"Linux {h.release} (needs {MIN_KERNEL[0]}.{MIN_KERNEL[1]}+)")
    else:
        add("kernel", FAIL, f"Linux {h.release}: the programs need {MIN_KERNEL[0]}.{MIN_KERNEL[1]}+ "
            "(BPF ring buffer, bpf_task_pt_regs)", "run on a node with a newer kernel")
    if h.btf.exists():
        add("btf", OK, f"{h.btf}")
    else:
        add("btf", FAIL, f"no {h.btf}: the programs read the task's registers through BTF",
            "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (the default of current distributions)")

    events = h.tracefs / "events"
    if events.is_dir():
        add("tracefs", OK, f"{h.tracefs}")
    elif (h.debugfs_tracing / "events").is_dir():
        add("tracefs", WARN, f"only under {h.debugfs_tracing}; the collector mounts tracefs at {h.tracefs}",
            f"mount -t tracefs tracefs {h.tracefs} (in a pod: mount the host's {h.tracefs})")
    else:
        add("tracefs", FAIL, f"no tracefs at {h.tracefs} nor {h.debugfs_tracing}",
            f"mount -t tracefs tracefs {h.tracefs} (in a pod: a hostPath volume of {h.tracefs})")

    found = h.find_headers(h.release)
    fix_headers = "install linux-headers-$(uname -r) (Debian: linux-headers-amd64), or mount the host's " \
                  "/lib/modules and /usr/src read-only in the pod"
    if found.kind == "exact":
        add("headers", OK, f"exact: {found.describe()}")
    elif found.kind in ("nearest", "kheaders"):
        add("headers", WARN, f"{found.kind}: {found.describe()}", fix_headers)
    else:
        add("headers", FAIL, found.describe(), fix_headers)

    if events.is_dir():
        syscalls = all((events / "syscalls" / f"sys_{s}_{c}").is_dir()
                       for s in ("enter", "exit") for c in ("accept4", "connect", "close"))
        if not syscalls:
            add("tracepoints", FAIL, "no syscall tracepoints (accept4, connect, close)",
                "use a kernel built with CONFIG_FTRACE_SYSCALLS=y")
        elif kheaders.has_sock_tracepoints(h.tracefs):
            add("tracepoints", OK, "syscalls and sock:sock_{send,recv}_length: data from the sock tracepoints "
                "(calls on files and pipes are not traced)")
        else:
            add("tracepoints", WARN, f"no sock:sock_{{send,recv}}_length (Linux {SOCK_KERNEL[0]}."
                f"{SOCK_KERNEL[1]}+): data from the read/write syscall tracepoints, which every read and write "
                "of the node pays", "a kernel 6.3 or newer removes that cost")
        if (h.tracefs / "uprobe_events").exists():
            add("uprobes", OK, "uprobe_events present (TLS capture)")
        else:
            add("uprobes", WARN, "no uprobe_events: TLS traffic cannot be captured",
                "use a kernel built with CONFIG_UPROBE_EVENTS=y")

    admin = bool(h.caps >> CAP_SYS_ADMIN & 1)
    bpf_caps = bool(h.caps >> CAP_BPF & 1) and bool(h.caps >> CAP_PERFMON & 1)
    why = {CAP_SYS_PTRACE: ("SYS_PTRACE", "reads other processes' files (their TLS libraries)"),
           CAP_SYS_RESOURCE: ("SYS_RESOURCE", "lifts the locked-memory limit that kernels before 5.11 "
                              "charge BPF maps to")}
    missing = [why[bit] for bit in why if not h.caps >> bit & 1]
    if h.euid != 0 or not (admin or bpf_caps):
        add("capabilities", FAIL, f"uid {h.euid}, effective capabilities {h.caps:#x}: loading BPF programs "
            "needs uid 0 with BPF and PERFMON (or SYS_ADMIN)",
            "run as root; in a pod: runAsUser 0 with capabilities add [BPF, PERFMON, SYS_PTRACE, SYS_RESOURCE]")
    elif missing:
        add("capabilities", WARN, "; ".join(f"no {name}, which {reason}" for name, reason in missing),
            f"add {', '.join(name for name, _ in missing)} to the container's capabilities")
    else:
        add("capabilities", OK, "uid 0 with " + ("SYS_ADMIN" if admin else "BPF and PERFMON"))

    fatal = any(c.status == FAIL for c in out)
    if not fatal:
        includes = kheaders.use_kernel_headers(found) if found.kind != "none" else []
        err = h.compile_and_load(includes)
        if err:
            add("load", FAIL, err, "see the headers and capabilities lines; `akto-collector run` logs the "
                "compiler's full message")
        else:
            add("load", OK, "a program with a ring buffer compiles, loads and attaches to a tracepoint and a uprobe")

    try:
        per_kind, refused = h.tls_coverage(settings)
        if per_kind:
            add("tls", OK, "processes covered: " + ", ".join(f"{k} {n}" for k, n in sorted(per_kind.items()))
                + (f"; {refused} not capturable (logged as tls_not_capturable at run time)" if refused else ""))
        else:
            add("tls", WARN, "no process of this host maps a TLS library we probe (OpenSSL, BoringSSL, GnuTLS, "
                "NSS, node, Go): only plaintext would be captured now", "none needed if that is expected")
    except Exception as exc:  # noqa: BLE001 (a scan error must not hide the other lines)
        add("tls", WARN, f"the process scan failed: {exc}")

    if settings.kafka_brokers:
        down = {b: e for b in settings.kafka_brokers if (e := h.reachable(b))}
        if down:
            add("kafka", FAIL, "unreachable: " + ", ".join(f"{b} ({e})" for b, e in down.items()),
                "check AKTO_NLB_IP / AKTO_KAFKA_BROKER_MAL and that the node can reach the broker")
        else:
            add("kafka", OK, "reachable: " + ", ".join(settings.kafka_brokers))
    else:
        add("kafka", OK, "not configured: messages go to stdout as JSON lines")

    if settings.metrics_addr:
        err = h.port_free(settings.metrics_addr)
        if err:
            add("metrics", FAIL, f"AKTO_METRICS_ADDR={settings.metrics_addr}: {err}",
                "stop what listens there (another collector?) or choose another address")
        else:
            add("metrics", OK, f"{settings.metrics_addr} free")

    status = h.core_status()
    core = summary(status)
    if "stale" in status.values():
        add("core", FAIL, f"{core}: compiled modules older than their sources", "make setup, or pip install .")
    elif core != "compiled":
        add("core", WARN, f"{core}: plain Python costs about 25% more CPU per pair",
            "install Cython and a C compiler, then make setup")
    else:
        add("core", OK, core)
    return out


def run_checks(settings, as_json: bool = False, host: Host | None = None, out=None) -> int:
    import sys  # noqa: PLC0415

    out = out or sys.stdout
    results = checks(settings, host)
    can = not any(c.status == FAIL for c in results)
    if as_json:
        doc = {"capture_possible": can, "checks": [c.__dict__ for c in results]}
        out.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for c in results:
            label = {OK: "ok  ", WARN: "warn", FAIL: "FAIL"}[c.status]
            out.write(f"{label} {c.name}: {c.detail}" + (f"\n       fix: {c.fix}" if c.fix and c.status != OK else "")
                      + "\n")
        out.write("capture can work on this host\n" if can else "capture cannot work until the FAIL lines are fixed\n")
    return 0 if can else 1
