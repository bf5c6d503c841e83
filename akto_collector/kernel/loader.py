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
import re
import time
from dataclasses import dataclass
from pathlib import Path

from akto_collector.kernel.errors import ProbeError
from akto_collector.kernel.records import HDR_SIZE, KERNEL_COUNTERS, LEN_OFFSET, WAKE_GAP_MS
from akto_collector.kernel.ringbuf import RingReader
from akto_collector.tlslibs import GO_DEFAULT_FD_LAYOUT, KINDS


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
    copy_limit: int = (1 << 20) + (64 << 10)  # bytes copied per call: the body limit and room for the head
    includes: tuple[str, ...] = ()  # headers of another kernel than the running one (headers.py)
    sock_data: bool = True  # data from the sock tracepoints, else the syscall fallback (socket_trace.c)

    @classmethod
    def from_settings(cls, settings, includes=(), sock_data: bool = True) -> ProbeOptions:
        return cls(
            includes=tuple(includes),
            sock_data=sock_data,
            max_conn=settings.max_active_conn,
            capture_plain=settings.capture_all,
            capture_tls=settings.capture_ssl,
            disable_egress=settings.disable_egress,
            filter_tls_pids=not settings.probe_all_pid,
            collector_tgid=os.getpid(),
            copy_limit=settings.max_body_bytes + (64 << 10),
            ringbuf_pages=(settings.ring_buffer_mb << 20) // mmap.PAGESIZE,
        )


def program_text(opts: ProbeOptions) -> str:
    d = probes_dir()
    parts = [(d / "common.h").read_text(), (d / "socket_trace.c").read_text()]
    if opts.capture_tls:
        parts.append((d / "tls_trace.c").read_text())
        parts.append((d / "go_tls.c").read_text())
    return "\n".join(parts)


_TRACEPOINT = re.compile(r"^(TRACEPOINT|SOCK_DATA|SYSCALL_DATA)\((\w+), (\w+)\)", re.M)  # common.h's macros


def tracepoints(text: str, sock_data: bool = True) -> list[tuple[str, str]]:
    """The tracepoint programs of a program text to attach, in source order, as
    ("category:event", function name): those of the data path in use
    (socket_trace.c) and the ones every path needs."""
    skip = "SYSCALL_DATA" if sock_data else "SOCK_DATA"
    return [(f"{cat}:{ev}", f"tp__{cat}__{ev}") for macro, cat, ev in _TRACEPOINT.findall(text) if macro != skip]


def cflags(opts: ProbeOptions) -> list[str]:
    return [
        f"-DMAX_CONN={opts.max_conn}",
        f"-DCAPTURE_PLAIN={int(opts.capture_plain)}",
        f"-DCAPTURE_TLS={int(opts.capture_tls)}",
        f"-DDISABLE_EGRESS={int(opts.disable_egress)}",
        f"-DFILTER_TLS_PIDS={int(opts.filter_tls_pids)}",
        f"-DRINGBUF_PAGES={opts.ringbuf_pages}",
        f"-DCOLLECTOR_TGID={opts.collector_tgid}",
        f"-DCOPY_LIMIT={opts.copy_limit}",
        f"-DWAKE_GAP_NS={WAKE_GAP_MS * 1_000_000}",
        *(f"-DGO_DEFAULT_{name.upper()}={value}" for name, value in GO_DEFAULT_FD_LAYOUT._asdict().items()),
        "-Wno-unused-function",
        *opts.includes,
    ]


class Probes:
    """Loaded programs, their maps and the uprobes attached so far."""

    def __init__(self, opts: ProbeOptions) -> None:
        from bcc import BPF  # noqa: PLC0415 (import here: the rest of the module is usable without bcc)

        self._BPF = BPF
        self.opts = opts
        text = program_text(opts)
        try:
            self.bpf = BPF(text=text, cflags=cflags(opts))
        except Exception as exc:  # bcc raises bare Exception on compile/load failure
            raise ProbeError(f"loading the BPF programs failed: {exc}") from exc
        self.uprobes: dict[tuple[int, int], list[str]] = {}
        try:
            # The copying programs, reached by tail calls (common.h, emit_call).
            for table, fn, kind in (("emit_tracepoints", b"emit_tracepoint", BPF.TRACEPOINT),
                                    ("emit_uprobes", b"emit_uprobe", BPF.KPROBE)):
                self.bpf.get_table(table)[ctypes.c_int(0)] = ctypes.c_int(self.bpf.load_func(fn, kind).fd)
        except Exception as exc:  # noqa: BLE001 (bcc raises bare Exception)
            self.bpf.cleanup()
            raise ProbeError(f"loading the copying programs failed: {exc}") from exc
        # Only now, with the copying programs in place, is any call traced.
        for tp, fn in tracepoints(text, opts.sock_data):
            try:
                self.bpf.attach_tracepoint(tp=tp, fn_name=fn.encode())
            except Exception as exc:  # noqa: BLE001 (bcc raises bare Exception)
                self.bpf.cleanup()
                raise ProbeError(f"attaching the tracepoint {tp} failed: {exc}") from exc
        try:
            self.ring = RingReader(self.bpf["events"].map_fd, opts.ringbuf_pages * mmap.PAGESIZE,
                                   head=HDR_SIZE, used_at=LEN_OFFSET)
        except (ValueError, OSError) as exc:
            self.bpf.cleanup()
            raise ProbeError(f"reading the ring buffer: {exc}") from exc
        self._ignore = self.bpf["ignore_tgid"]
        try:  # one u32 in a page of its own (BPF_F_MMAPABLE): read and written as memory
            self._shed_map = mmap.mmap(self.bpf["shed_state"].map_fd, mmap.PAGESIZE, mmap.MAP_SHARED,
                                       mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            self.ring.close()
            self.bpf.cleanup()
            raise ProbeError(f"mapping the shedding flag: {exc}") from exc
        self._shed = memoryview(self._shed_map).cast("I")
        self._counters = self.bpf["counters"]
        self._tls_pids = self.bpf["tls_pids"] if opts.filter_tls_pids else None

    # -- data --------------------------------------------------------------
    def drain(self, out: list) -> int:
        """Append every record waiting in the ring buffer (raw bytes) to ``out``."""
        return self.ring.drain(out)

    def wait(self, timeout_ms: int) -> bool:
        """Sleep until a record that asked for a wake-up arrives (a process's first
        connection; an exec into an empty ring), or timeout; whether one did."""
        return self.ring.wait(timeout_ms / 1000)

    def counters(self) -> dict[str, int]:
        out = {}
        for slot, name in KERNEL_COUNTERS.items():
            vals = self._counters[ctypes.c_int(slot)]
            out[name] = int(sum(vals))
        return out

    # -- control -----------------------------------------------------------
    def shedding(self) -> bool:
        """The kernel's shedding flag (common.h): set by us, or by the kernel when the ring refused a record."""
        return bool(self._shed[0])

    def set_shedding(self, on: bool) -> None:
        self._shed[0] = int(on)

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

    def attach_go(self, key: tuple[int, int], path: str, go) -> list[str]:
        """Attach the Go crypto/tls probes of one executable (a ``goelf.GoTls``):
        each function's entry, and every RET the disassembler confirmed (plain
        uprobes there: a uretprobe would crash the Go program). Returns the
        functions attached; raises ProbeError, with nothing left attached, when
        any probe fails (half the RETs would lose returns silently)."""
        if key in self.uprobes:
            return self.uprobes[key]
        done: list[tuple[int, str]] = []
        try:
            for fn, (sym, enter, ret) in zip(go.functions, KINDS["go"].probes):
                for addr, prog in ((fn.entry, enter), *((r, ret) for r in fn.rets)):
                    self.bpf.attach_uprobe(name=path, addr=addr, fn_name=prog)
                    done.append((addr, prog))
        except Exception as exc:  # bcc raises bare Exception
            for addr, _ in done:
                try:
                    self.bpf.detach_uprobe(name=path, addr=addr)
                except Exception:  # noqa: BLE001
                    pass
            raise ProbeError(f"{path}: attaching at 0x{addr:x} failed: {exc}") from exc
        self.uprobes[key] = [fn.name for fn in go.functions]
        return self.uprobes[key]

    def set_go_layout(self, pid: int, layout) -> None:
        """Tell the Go probes how to read the fd in process ``pid``. An entry
        the kernel made itself with the same layout (the process ran before its
        scan) is kept, with the net.Conn types it confirmed; a different one is
        replaced, and its confirmations start afresh."""
        table = self.bpf["go_procs"]
        key = table.Key(pid)
        old = table.get(key)
        if old is not None and (old.conn, old.iface_data, old.tcpconn_fd, old.netfd_pfd, old.pfd_sysfd) == tuple(layout):
            return  # as the kernel assumed: keep what it confirmed
        leaf = table.Leaf()
        leaf.conn, leaf.iface_data, leaf.tcpconn_fd = layout.conn, layout.iface_data, layout.tcpconn_fd
        leaf.netfd_pfd, leaf.pfd_sysfd = layout.netfd_pfd, layout.pfd_sysfd
        table[key] = leaf

    def close(self) -> None:
        """Detach everything: bcc closes the links and unloads the programs."""
        self.ring.close()  # its mappings hold the map open
        self._shed.release()
        self._shed_map.close()
        self.bpf.cleanup()


def _ktime_ns() -> int:
    # bpf_ktime_get_ns is CLOCK_MONOTONIC
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def dump_program(opts: ProbeOptions) -> str:
    return "// cflags: " + " ".join(cflags(opts)) + "\n" + program_text(opts)
