"""Loads the kernel programs: the only module of the project that imports bcc.

Compiles probes/*.c with -D defines from the settings, attaches the syscall
tracepoints and the TLS uprobes (which probes go on which symbol:
``tlslibs``), gives the ring buffer's map to ``ringbuf.RingReader`` (records
are read from the map's memory, not through bcc's per-record callback), and
reads and writes the control maps (ignored pids, allowed TLS pids, the
kernel's counters, connection expiry). Records are handed on raw (layout:
``records``), so the supervisor only routes and the workers decode.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import time
from dataclasses import dataclass
from pathlib import Path

from akto_collector.kernel.errors import ProbeError
from akto_collector.kernel.records import HDR_SIZE, KERNEL_COUNTERS, LEN_OFFSET
from akto_collector.kernel.ringbuf import RingReader
from akto_collector.tlslibs import KINDS


def probes_dir() -> Path:
    """Where the programs' C sources are: the copy the build puts into an
    installed package (setup.py), else the checkout's top-level probes/."""
    here = Path(__file__).resolve().parent
    installed = here / "probes"
    if (installed / "common.h").exists():
        return installed
    return here.parents[1] / "probes"


@dataclass(frozen=True)
class ProbeOptions:
    max_conn: int = 4096
    capture_plain: bool = True
    capture_tls: bool = True
    disable_egress: bool = False
    filter_tls_pids: bool = False
    ringbuf_pages: int = 16384  # 64 MiB: ~15k typical pairs of slack while the drain is late
    collector_tgid: int = 0  # the supervisor: never traced, from the first program attached

    @classmethod
    def from_settings(cls, settings) -> ProbeOptions:
        return cls(
            max_conn=settings.max_active_conn,
            capture_plain=settings.capture_all,
            capture_tls=settings.capture_ssl,
            disable_egress=settings.disable_egress,
            filter_tls_pids=not settings.probe_all_pid,
            collector_tgid=os.getpid(),
        )


def program_text(opts: ProbeOptions) -> str:
    d = probes_dir()
    parts = [(d / "common.h").read_text(), (d / "socket_trace.c").read_text()]
    if opts.capture_tls:
        parts.append((d / "tls_trace.c").read_text())
    return "\n".join(parts)


def cflags(opts: ProbeOptions) -> list[str]:
    return [
        f"-DMAX_CONN={opts.max_conn}",
        f"-DCAPTURE_PLAIN={int(opts.capture_plain)}",
        f"-DCAPTURE_TLS={int(opts.capture_tls)}",
        f"-DDISABLE_EGRESS={int(opts.disable_egress)}",
        f"-DFILTER_TLS_PIDS={int(opts.filter_tls_pids)}",
        f"-DRINGBUF_PAGES={opts.ringbuf_pages}",
        f"-DCOLLECTOR_TGID={opts.collector_tgid}",
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

    def unignore_pid(self, pid: int) -> None:
        try:
            del self._ignore[ctypes.c_uint32(pid)]
        except KeyError:
            pass

    def expire_connections(self, idle_ns: int, exited=frozenset()) -> tuple[int, int]:
        """Forget kernel connection entries idle for longer than idle_ns, and
        those of processes in ``exited``, so the table (sized
        TRAFFIC_MAX_ACTIVE_CONN) keeps room for new ones. Returns (idle, exited) counts."""
        conns = self.bpf["conns"]
        now = _ktime_ns()
        try:  # one snapshot in a few syscalls; a key-by-key walk restarts when the kernel deletes
            entries = list(conns.items_lookup_batch())
        except Exception:  # noqa: BLE001 (older kernels/bcc: walk key by key)
            entries = list(conns.items())
        idle = dead = 0
        for k, v in entries:
            key = k if isinstance(k, int) else k.value
            if (key >> 32) in exited:
                dead += 1
            elif now - v.last_ts > idle_ns:
                idle += 1
            else:
                continue
            try:  # the batch API hands back plain ints for integer keys
                del conns[conns.Key(key)]
            except KeyError:
                pass
        return idle, dead

    def attach_tls(self, key: tuple[int, int], path: str, kind: str, symbols) -> list[str]:
        """Attach the uprobes for one library file (a uprobe on a file covers
        every process that maps it). Returns the symbols attached; raises
        ProbeError when none could be."""
        if key in self.uprobes:
            return self.uprobes[key]
        present = set(symbols)
        attached, errors = [], []
        for sym, enter, ret in KINDS[kind].probes:
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

    def close(self) -> None:
        """Detach everything: bcc closes the links and unloads the programs."""
        self.ring.close()  # its mappings hold the map open
        self.bpf.cleanup()


def _ktime_ns() -> int:
    # bpf_ktime_get_ns is CLOCK_MONOTONIC
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def dump_program(opts: ProbeOptions) -> str:
    return "// cflags: " + " ".join(cflags(opts)) + "\n" + program_text(opts)
