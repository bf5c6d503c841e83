"""The kernel side: the only module that imports bcc.

Compiles probes/*.c with -D defines from the settings, attaches the syscall
tracepoints and the TLS uprobes, drains the ring buffer in batches (the
programs submit without waking us; a timer drains; the records are read
from the map's memory by ringbuf.RingReader, not through bcc's per-record
callback), and reads the in-kernel counters. Records are handed on raw: a 48-byte header (see RECORD) and the
copied bytes, so the supervisor only routes and the workers decode.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from akto_collector.records import HDR_SIZE, LEN_OFFSET
from akto_collector.ringbuf import RingReader

PROBES_DIR = Path(__file__).resolve().parent / "probes"

# Slots of the `counters` per-CPU array, as in common.h.
KERNEL_COUNTERS = {
    0: "kernel.dropped.ringbuf_full",
    1: "kernel.dropped.conn_table_full",
    2: "kernel.not_http_connections",
    3: "kernel.cut_bytes",
    4: "kernel.dropped.tls_no_fd",
    5: "kernel.skipped.egress",
    8: "kernel.skipped.plaintext_on_tls",
    9: "kernel.untraced_socket_bytes",
}

# Which probe functions go on which TLS symbol: (symbol, entry fn, return fn).
TLS_PROBES = {
    "openssl": (
        ("SSL_read", "tls_read_enter", "tls_exit_int"),
        ("SSL_write", "tls_write_enter", "tls_exit_int"),
        ("SSL_read_ex", "tls_read_ex_enter", "tls_exit_ex"),
        ("SSL_write_ex", "tls_write_ex_enter", "tls_exit_ex"),
        ("SSL_free", "tls_free_enter", None),
    ),
    "gnutls": (
        ("gnutls_record_recv", "tls_read_enter", "tls_exit_ssize"),
        ("gnutls_record_send", "tls_write_enter", "tls_exit_ssize"),
    ),
    "nss": (
        ("PR_Read", "tls_read_enter", "tls_exit_int"),
        ("PR_Recv", "tls_read_enter", "tls_exit_int"),
        ("PR_Write", "tls_write_enter", "tls_exit_int"),
        ("PR_Send", "tls_write_enter", "tls_exit_int"),
    ),
}
TLS_PROBES["boringssl"] = TLS_PROBES["openssl"]
TLS_PROBES["openssl-static"] = TLS_PROBES["openssl"]
TLS_PROBES["boringssl-static"] = TLS_PROBES["openssl"]


class ProbeError(Exception):
    """The kernel side could not be set up; the message says why."""


def ensure_kernel_headers() -> str | None:
    """Make bcc find kernel headers. Returns a note when it fell back to
    other headers than the running kernel's, None when none was needed."""
    release = platform.release()
    build = Path("/lib/modules") / release / "build"
    if (build / "include").exists():
        return None
    candidates = sorted(Path("/usr/src").glob("linux-headers-*"))
    arch = [c for c in candidates if not c.name.endswith("-common") and (c / "include").exists()]
    if not arch:
        raise ProbeError(
            f"no kernel headers for {release} in /lib/modules nor in /usr/src; "
            "install linux-headers-amd64 (make setup does)")
    chosen = _nearest(arch, release)
    common = Path(str(chosen).rsplit("-", 1)[0] + "-common")
    build.parent.mkdir(parents=True, exist_ok=True)
    for link, target in ((build, chosen), (build.parent / "source", common if common.exists() else chosen)):
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return f"kernel headers for {release} missing: using {chosen.name}"


def _nearest(paths: list[Path], release: str) -> Path:
    def version(name: str) -> tuple[int, ...]:
        nums = []
        for part in name.replace("linux-headers-", "").replace("-", ".").split("."):
            if not part.isdigit():
                break
            nums.append(int(part))
        return tuple(nums)

    want = version(release)
    return min(paths, key=lambda p: (abs(version(p.name)[:1][0] - want[0]) if version(p.name) else 99,
                                     tuple(-x for x in version(p.name))))


def ensure_tracefs() -> None:
    if not Path("/sys/kernel/tracing/events").exists():
        rc = os.system("mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null")
        if rc != 0 or not Path("/sys/kernel/tracing/events").exists():
            raise ProbeError("tracefs is not mounted at /sys/kernel/tracing and mounting it failed")


@dataclass(frozen=True)
class ProbeOptions:
    max_conn: int = 4096
    capture_plain: bool = True
    capture_tls: bool = True
    disable_egress: bool = False
    filter_tls_pids: bool = False
    ringbuf_pages: int = 16384  # 64 MiB: ~15k typical pairs of slack while the drain is late


def program_text(opts: ProbeOptions) -> str:
    parts = [(PROBES_DIR / "common.h").read_text(), (PROBES_DIR / "socket_trace.c").read_text()]
    if opts.capture_tls:
        parts.append((PROBES_DIR / "tls_trace.c").read_text())
    return "\n".join(parts)


def cflags(opts: ProbeOptions) -> list[str]:
    return [
        f"-DMAX_CONN={opts.max_conn}",
        f"-DCAPTURE_PLAIN={int(opts.capture_plain)}",
        f"-DCAPTURE_TLS={int(opts.capture_tls)}",
        f"-DDISABLE_EGRESS={int(opts.disable_egress)}",
        f"-DFILTER_TLS_PIDS={int(opts.filter_tls_pids)}",
        f"-DRINGBUF_PAGES={opts.ringbuf_pages}",
        "-Wno-unused-function",
    ]


class Probes:
    """Loaded programs, their maps and the uprobes attached so far."""

    def __init__(self, opts: ProbeOptions) -> None:
        from bcc import BPF  # noqa: PLC0415 (import here: the rest of the module is usable without bcc)

        self._BPF = BPF
        self.opts = opts
        try:
            self.bpf = BPF(text=program_text(opts), cflags=cflags(opts))
        except Exception as exc:  # bcc raises bare Exception on compile/load failure
            raise ProbeError(f"loading the BPF programs failed: {exc}") from exc
        self.uprobes: dict[tuple[int, int], list[str]] = {}
        try:
            self.ring = RingReader(self.bpf["events"].map_fd, opts.ringbuf_pages * mmap.PAGESIZE,
                                   head=HDR_SIZE, used_at=LEN_OFFSET)
        except (ValueError, OSError) as exc:
            self.bpf.cleanup()
            raise ProbeError(f"reading the ring buffer: {exc}") from exc
        self._ignore = self.bpf["ignore_tgid"]
        self._counters = self.bpf["counters"]
        self._tls_pids = self.bpf["tls_pids"] if opts.filter_tls_pids else None

    # -- data --------------------------------------------------------------
    def drain(self, out: list) -> int:
        """Append every record waiting in the ring buffer (raw bytes) to ``out``."""
        return self.ring.drain(out)

    def wait(self, timeout_ms: int) -> None:
        """Sleep until a record that asked for a wake-up arrives (exec), or timeout."""
        self.ring.wait(timeout_ms / 1000)

    def counters(self) -> dict[str, int]:
        out = {}
        for slot, name in KERNEL_COUNTERS.items():
            vals = self._counters[ctypes.c_int(slot)]
            out[name] = int(sum(vals))
        return out

    # -- control -----------------------------------------------------------
    def ignore_pid(self, pid: int) -> None:
        self._ignore[ctypes.c_uint32(pid)] = ctypes.c_uint8(1)

    def allow_tls_pid(self, pid: int) -> None:
        if self._tls_pids is not None:
            self._tls_pids[ctypes.c_uint32(pid)] = ctypes.c_uint8(1)

    def expire_connections(self, idle_ns: int) -> int:
        """Forget kernel connection entries idle for longer than idle_ns, so
        the table (sized TRAFFIC_MAX_ACTIVE_CONN) keeps room for new ones."""
        conns = self.bpf["conns"]
        now = _ktime_ns()
        try:  # one snapshot in a few syscalls; a key-by-key walk restarts when the kernel deletes
            entries = list(conns.items_lookup_batch())
        except Exception:  # noqa: BLE001 (older kernels/bcc: walk key by key)
            entries = list(conns.items())
        stale = [k for k, v in entries if now - v.last_ts > idle_ns]
        for k in stale:
            try:  # the batch API hands back plain ints for integer keys
                del conns[k if isinstance(k, ctypes._SimpleCData) else conns.Key(k)]
            except KeyError:
                pass
        return len(stale)

    def active_connections(self) -> int:
        return sum(1 for _ in self.bpf["conns"].keys())

    def attach_tls(self, key: tuple[int, int], path: str, kind: str, symbols) -> list[str]:
        """Attach the uprobes for one library file (a uprobe on a file covers
        every process that maps it). Returns the symbols attached; raises
        ProbeError when none could be."""
        if key in self.uprobes:
            return self.uprobes[key]
        present = set(symbols)
        attached, errors = [], []
        for sym, enter, ret in TLS_PROBES.get(kind, ()):
            if sym not in present:
                continue
            try:
                self.bpf.attach_uprobe(name=path, sym=sym, fn_name=enter)
                if ret:
                    self.bpf.attach_uretprobe(name=path, sym=sym, fn_name=ret)
                attached.append(sym)
            except Exception as exc:  # bcc raises bare Exception
                errors.append(f"{sym}: {exc}")
        if not attached:
            raise ProbeError("; ".join(errors) or f"no TLS symbols of kind {kind} in {path}")
        self.uprobes[key] = attached
        return attached

    def detach_tls(self, key: tuple[int, int], path: str) -> None:
        for sym in self.uprobes.pop(key, ()):
            for detach in (self.bpf.detach_uprobe, self.bpf.detach_uretprobe):
                try:
                    detach(name=path, sym=sym)
                except Exception:  # noqa: BLE001 (already gone with its process)
                    pass

    def close(self) -> None:
        """Detach everything: bcc closes the links and unloads the programs."""
        self.ring.close()  # its mappings hold the map open
        self.bpf.cleanup()


def _ktime_ns() -> int:
    return time_monotonic_ns()


def time_monotonic_ns() -> int:
    # bpf_ktime_get_ns is CLOCK_MONOTONIC
    import time

    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def dump_program(opts: ProbeOptions) -> str:
    return "// cflags: " + " ".join(cflags(opts)) + "\n" + program_text(opts)
