"""Process scanner: which files to attach TLS uprobes to, and for which pids.

Walks ``{proc_root}/PID``: the memory maps name the TLS libraries a process
has loaded (OpenSSL/BoringSSL ``libssl.so*``, GnuTLS ``libgnutls.so*``, NSS
``libnspr4.so``), and the executable itself may carry OpenSSL linked in
statically (``/usr/bin/node``). Each candidate is confirmed by its ELF symbol
tables. Files are identified by ``(st_dev, st_ino)`` of the path resolved
through ``/proc/PID/root``, so a library inside a container is found, read
from the host, and reported once however many processes map it: a uprobe on
a file covers every process that maps that file.

Nothing here logs or attaches anything, and bcc is not imported: ``scan``
returns what it found, what cannot be captured and why, and which pids could
not be read, and the caller (``uprobes.UprobeManager``) acts and logs. What a
file is comes from ``elf``; which kinds there are, from ``tlslibs``.

ELF analysis is cached by file identity ``(dev, ino, size, mtime)`` for the
scanner's lifetime, so a large executable (node is ~100 MB) is analysed once;
later scans cost a few small /proc reads per process.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

from akto_collector.procfs import process_comm, process_start_time, read_stat  # noqa: F401 (re-exported)
from akto_collector.supervisor.elf import ElfInfo
from akto_collector.supervisor.elf import analyse_elf as _analyse_elf
from akto_collector.supervisor.goelf import GoRefusal, GoTls
from akto_collector.supervisor.goelf import analyse_go as _analyse_go
from akto_collector.tlslibs import (
    GNUTLS,
    KIND_BORINGSSL,
    KIND_BORINGSSL_STATIC,
    KIND_GNUTLS,
    KIND_GO,
    KIND_NSS,
    KIND_OPENSSL,
    KIND_OPENSSL_STATIC,
    KINDS,
    NSS,
    OPENSSL,
    usable,
)

# Where the host's own TLS libraries live (attached at start: a short-lived
# client that maps them later is covered from its first call).
SYSTEM_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib",
                   "/usr/local/lib", "/usr/lib/aarch64-linux-gnu")

REASON_JAVA = "java: TLS in JSSE is not captured"
REASON_STRIPPED = (
    "static: {lib} is linked into the executable but its SSL_read/SSL_write "
    "symbols are stripped"
)

# Lines of /proc/PID/maps naming a file we care about. Groups: start, end of the
# mapping (for map_files/ when the file was deleted), path, deleted marker.
_MAPS_RE = re.compile(
    rb"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \d+ +"
    rb"(/(?:[^\n]*/)?(?:libssl(?:-[0-9a-f]{8})?\.so[^/\n]*?|libgnutls\.so[^/\n]*?|libnspr4\.so"
    rb"|libssl3\.so|libjvm\.so|libcrypto(?:-[0-9a-f]{8})?\.so[^/\n]*?))( \(deleted\))?$",
    re.MULTILINE,
)
_MAPS_MARKERS = (b"/libssl", b"/libgnutls.so", b"/libnspr4.so", b"/libjvm.so")
# OpenSSL's file names, also as renamed by auditwheel in Python wheels
# (libssl-1a2b3c4d.so.3); NSS's libssl3.so is not one of them.
_LIBSSL_NAME_RE = re.compile(r"libssl(?:-[0-9a-f]{8})?\.so")
_LIBCRYPTO_NAME_RE = re.compile(r"libcrypto(?:-[0-9a-f]{8})?\.so")
# Version suffix of a shared object's file name: libssl.so.1.1 -> "1.1".
_SO_VERSION_RE = re.compile(r"\.so\.(\d[\w.]*)$")
# Cgroup paths of containers, not of the runtimes' own daemons (which live in
# docker.service / containerd.service) nor of their per-container monitors
# (crio-conmon-*, libpod-conmon-*).
_CONTAINER_CGROUP_RE = re.compile(
    r"kubepods"
    r"|/docker[-/][0-9a-f]{12,}"
    r"|cri-containerd[-:][0-9a-f]{12,}"
    r"|/crio-(?!conmon-)[0-9a-f]{12,}"
    r"|/libpod-(?!conmon-)[0-9a-f]{12,}"
)

_PF_KTHREAD = 0x00200000  # task flag (field 9 of /proc/PID/stat)


class Unsupported(NamedTuple):
    """A process whose TLS traffic is known not to be captured, and why."""

    pid: int
    comm: str
    reason: str


class ScanError(NamedTuple):
    """A pid that could not be scanned; the caller should retry it later."""

    pid: int
    reason: str


@dataclass(slots=True)
class TlsLibrary:
    """One file to attach TLS uprobes to.

    ``path`` is readable from the collector (``{proc_root}/PID/root/...``, or
    ``/PID/map_files/...`` / ``/PID/exe`` when the file was deleted on disk);
    it goes through one of ``pids`` and stays valid while that process lives.
    ``symbols`` are the probe-able functions the file defines, and
    ``addresses`` their ELF symbol values (virtual addresses, as bcc's
    ``attach_uprobe(addr=...)`` takes them).
    """

    path: str
    kind: str
    version: str  # "" when it could not be read
    symbols: tuple[str, ...]
    dev: int
    ino: int
    pids: set[int] = field(default_factory=set)
    addresses: dict[str, int] = field(default_factory=dict)
    go: GoTls | None = None  # a Go executable's analysis: where its probes go, how to read its fd

    @property
    def key(self) -> tuple[int, int]:
        return (self.dev, self.ino)


@dataclass(slots=True)
class ScanResult:
    """What one scan found. ``unsupported`` holds each (pid, reason) once per
    scanner lifetime; ``errors`` are reported on every scan that hits them."""

    libraries: dict[tuple[int, int], TlsLibrary] = field(default_factory=dict)
    unsupported: list[Unsupported] = field(default_factory=list)
    errors: list[ScanError] = field(default_factory=list)
    scanned: int = 0  # processes whose maps were read
    duration: float = 0.0  # seconds


def is_container_cgroup(cgroup_text: str) -> bool:
    """True if /proc/PID/cgroup content places the process in a container
    (kubepods, docker, containerd, cri-o, libpod)."""
    return _CONTAINER_CGROUP_RE.search(cgroup_text) is not None


class _ProcMaps(NamedTuple):
    # path in the process's mount namespace -> "start-end" of a mapping when
    # the file was deleted, "" otherwise
    libs: dict[str, str]
    jvm: bool
    nss_ssl: bool  # maps NSS's libssl3.so: NSPR I/O carries TLS


class ProcessScanner:
    """Finds TLS libraries to probe and the processes they cover.

    ``probe_all_pid=False`` restricts the scan to processes in containers
    (by cgroup path); ``ignore_pids`` (the collector's own) are skipped.
    Not thread-safe: one owner calls ``scan``.
    """

    def __init__(
        self,
        proc_root: str = "/proc",
        probe_all_pid: bool = True,
        ignore_pids: Iterable[int] = frozenset(),
    ) -> None:
        self.proc_root = proc_root.rstrip("/") or "/"
        self.probe_all_pid = probe_all_pid
        self.ignore_pids = frozenset(ignore_pids)
        self._elf_cache: dict[tuple, ElfInfo] = {}
        self._reported: set[tuple[int, int, str]] = set()  # (pid, start_time, reason)

    # -- public -------------------------------------------------------------

    def scan(self, pids: Iterable[int] | None = None) -> ScanResult:
        """Scan every process (``pids=None``) or only the given ones.

        A full scan also forgets cached analyses of files no process maps
        any more and report marks of processes that exited.
        """
        t0 = time.monotonic()
        result = ScanResult()
        full = pids is None
        if full:
            pids = self._all_pids()
        used_keys: set[tuple] = set()
        alive: set[tuple[int, int]] = set()
        for pid in pids:
            if pid in self.ignore_pids:
                continue
            self._scan_pid(pid, result, used_keys, alive)
        if full:
            self._elf_cache = {k: v for k, v in self._elf_cache.items() if k in used_keys}
            self._reported = {r for r in self._reported if (r[0], r[1]) in alive}
        result.duration = time.monotonic() - t0
        return result

    # -- internals ----------------------------------------------------------

    def _all_pids(self) -> list[int]:
        try:
            names = os.listdir(self.proc_root)
        except OSError:
            return []
        return sorted(int(n) for n in names if n.isdigit())

    def _scan_pid(self, pid, result: ScanResult, used_keys, alive) -> None:
        base = f"{self.proc_root}/{pid}"
        try:
            comm, flags, start = read_stat(self.proc_root, pid)
        except FileNotFoundError:
            result.errors.append(ScanError(pid, "vanished"))
            return
        except OSError as e:
            result.errors.append(ScanError(pid, f"cannot read stat: {e}"))
            return
        if flags & _PF_KTHREAD:
            return  # kernel thread: no user memory to probe
        alive.add((pid, start))
        if not self.probe_all_pid:
            try:
                with open(f"{base}/cgroup", encoding="utf-8", errors="replace") as f:
                    if not is_container_cgroup(f.read()):
                        return
            except FileNotFoundError:
                result.errors.append(ScanError(pid, "vanished"))
                return
            except OSError as e:
                result.errors.append(ScanError(pid, f"cannot read cgroup: {e}"))
                return
        try:
            maps = self._read_maps(base)
            if maps is None:
                return  # no mappings: kernel thread or zombie
            exe_link = os.readlink(f"{base}/exe")
            exe_st = os.stat(f"{base}/exe")
        except FileNotFoundError:
            result.errors.append(ScanError(pid, "vanished"))
            return
        except OSError as e:
            result.errors.append(ScanError(pid, f"cannot read maps/exe: {e}"))
            return
        result.scanned += 1

        def unsupported(reason: str) -> None:
            mark = (pid, start, reason)
            if mark not in self._reported:
                self._reported.add(mark)
                result.unsupported.append(Unsupported(pid, comm, reason))

        found_lib = self._scan_libraries(pid, base, maps, result, used_keys, unsupported)

        java = maps.jvm or os.path.basename(exe_link.removesuffix(" (deleted)")) == "java"
        if java:
            unsupported(REASON_JAVA)

        key = (exe_st.st_dev, exe_st.st_ino, exe_st.st_size, exe_st.st_mtime_ns, "exe")
        used_keys.add(key)
        info = self._elf(key, f"{base}/exe", OPENSSL.symbols, "exe")
        if info.error:
            if not java:  # the JVM was already explained
                unsupported(f"exe: {info.error}")
            return
        if info.symbols:
            if usable(OPENSSL, info.symbols):
                kind = KIND_BORINGSSL_STATIC if info.boringssl else KIND_OPENSSL_STATIC
                path = self._exe_path(base, exe_link, exe_st)
                self._add(result, path, kind, info.openssl_version, info, exe_st, pid)
        elif info.go and info.go_tls:
            go = self._go(key, f"{base}/exe", used_keys)
            if isinstance(go, GoRefusal):
                unsupported(f"go: {go.reason}")
            elif go is not None:
                path = self._exe_path(base, exe_link, exe_st)
                self._add(result, path, KIND_GO, go.version, ElfInfo({}), exe_st, pid, go)
        elif info.stripped_static and not found_lib:
            lib = "BoringSSL" if info.boringssl else f"OpenSSL {info.openssl_version}"
            unsupported(REASON_STRIPPED.format(lib=lib))

    def _read_maps(self, base: str) -> _ProcMaps | None:
        with open(f"{base}/maps", "rb") as f:
            data = f.read()
        if not data:
            return None
        libs: dict[str, str] = {}
        jvm = nss_ssl = False
        # Most processes map none of these: skip the regex for them.
        if any(m in data for m in _MAPS_MARKERS):
            for m in _MAPS_RE.finditer(data):
                path = os.fsdecode(m.group(3))
                name = path.rsplit("/", 1)[-1]
                if name == "libjvm.so":
                    jvm = True
                elif name == "libssl3.so":
                    nss_ssl = True
                elif path not in libs or (m.group(4) and not libs[path]):
                    deleted = m.group(4) is not None
                    libs[path] = f"{m.group(1).decode()}-{m.group(2).decode()}" if deleted else ""
        return _ProcMaps(libs, jvm, nss_ssl)

    def _scan_libraries(self, pid, base, maps: _ProcMaps, result, used_keys, unsupported) -> bool:
        """Add the pid's mapped TLS libraries to result; True if any was usable."""
        found = False
        crypto_version = ""
        for path, deleted_range in maps.libs.items():
            name = path.rsplit("/", 1)[-1]
            if _LIBSSL_NAME_RE.match(name):
                kind, names = KIND_OPENSSL, OPENSSL.symbols
            elif name.startswith("libgnutls.so"):
                kind, names = KIND_GNUTLS, GNUTLS.symbols
            elif name == "libnspr4.so":
                if not maps.nss_ssl:
                    continue  # NSPR without NSS's SSL layer carries no TLS
                kind, names = KIND_NSS, NSS.symbols
            else:
                continue  # libcrypto: read below for the OpenSSL version
            host_path = _host_path(base, path, deleted_range)
            try:
                st = os.stat(host_path)
            except OSError as e:
                result.errors.append(ScanError(pid, f"cannot stat {host_path}: {e}"))
                continue
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, "lib")
            used_keys.add(key)
            info = self._elf(key, host_path, names, "lib")
            if info.error:
                unsupported(f"{kind}: {info.error}")
                continue
            api = KINDS[kind]
            if not usable(api, info.symbols):
                wanted = "/".join(api.reads + api.writes)
                unsupported(f"{kind}: {path} lacks {wanted}")
                continue
            version = _SO_VERSION_RE.search(name)
            version = version.group(1) if version else ""
            if kind == KIND_OPENSSL:
                if info.boringssl:
                    kind = KIND_BORINGSSL
                else:
                    crypto_version = crypto_version or self._crypto_version(base, maps, used_keys)
                    version = crypto_version or version
            self._add(result, host_path, kind, version, info, st, pid)
            found = True
        return found

    def _crypto_version(self, base: str, maps: _ProcMaps, used_keys) -> str:
        """Full OpenSSL version ("3.0.19") from the libcrypto the process maps;
        libssl itself does not carry the version text."""
        for path, deleted_range in maps.libs.items():
            if not _LIBCRYPTO_NAME_RE.match(path.rsplit("/", 1)[-1]):
                continue
            host_path = _host_path(base, path, deleted_range)
            try:
                st = os.stat(host_path)
            except OSError:
                continue
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, "crypto")
            used_keys.add(key)
            info = self._elf(key, host_path, (), "crypto")
            if info.openssl_version and not info.boringssl:
                return info.openssl_version
        return ""

    def _go(self, key, path: str, used_keys) -> GoTls | GoRefusal | None:
        """A Go executable's analysis (cached by file identity, as every ELF one)."""
        gokey = key + ("go",)
        used_keys.add(gokey)
        if gokey not in self._elf_cache:
            self._elf_cache[gokey] = _analyse_go(path)
        return self._elf_cache[gokey]

    def _elf(self, key, path: str, names: tuple[str, ...], mode: str) -> ElfInfo:
        info = self._elf_cache.get(key)
        if info is None:
            info = _analyse_elf(path, names, mode)
            self._elf_cache[key] = info
        return info

    @staticmethod
    def _exe_path(base: str, exe_link: str, exe_st: os.stat_result) -> str:
        """A stable path to the executable: through root/ when that is the
        same file, else the exe link itself (deleted or replaced on disk)."""
        if not exe_link.endswith(" (deleted)"):
            path = f"{base}/root{exe_link}"
            try:
                st = os.stat(path)
                if (st.st_dev, st.st_ino) == (exe_st.st_dev, exe_st.st_ino):
                    return path
            except OSError:
                pass
        return f"{base}/exe"

    def scan_files(self, paths: Iterable[str]) -> ScanResult:
        """TLS libraries on this host's disk, whether or not a process maps
        them yet. A uprobe on a file covers every process that maps it later,
        so a short-lived client (curl, wget) is covered from its first call
        instead of racing the exec-triggered scan. Unreadable or unusable
        files are skipped: this only adds to what scan() finds."""
        result = ScanResult()
        for path in paths:
            name = os.path.basename(path)
            if _LIBSSL_NAME_RE.match(name):
                kind, names = KIND_OPENSSL, OPENSSL.symbols
            elif name.startswith("libgnutls.so"):
                kind, names = KIND_GNUTLS, GNUTLS.symbols
            else:
                continue
            real = os.path.realpath(path)
            try:
                st = os.stat(real)
            except OSError:
                continue
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, "lib")
            info = self._elf(key, real, names, "lib")
            if info.error or not usable(KINDS[kind], info.symbols):
                continue
            if kind == KIND_OPENSSL and info.boringssl:
                kind = KIND_BORINGSSL
            version = _SO_VERSION_RE.search(name)
            self._add(result, real, kind, version.group(1) if version else "", info, st, None)
            result.libraries[(st.st_dev, st.st_ino)].pids.discard(None)
        return result

    @staticmethod
    def _add(result: ScanResult, path, kind, version, info: ElfInfo, st, pid, go: GoTls | None = None) -> None:
        key = (st.st_dev, st.st_ino)
        lib = result.libraries.get(key)
        if lib is None:
            lib = TlsLibrary(
                path=path,
                kind=kind,
                version=version,
                symbols=KINDS[kind].symbols if go is not None else tuple(n for n in KINDS[kind].symbols
                                                                         if n in info.symbols),
                dev=st.st_dev,
                ino=st.st_ino,
                addresses=dict(info.symbols) if go is None else {f.name: f.entry for f in go.functions},
                go=go,
            )
            result.libraries[key] = lib
        lib.pids.add(pid)


def _host_path(base: str, path: str, deleted_range: str) -> str:
    """Where the collector reads a file the process maps: through the
    process's root (its container's filesystem). A file deleted or replaced
    on disk since it was mapped is still reachable through map_files/."""
    return f"{base}/map_files/{deleted_range}" if deleted_range else f"{base}/root{path}"


def system_tls_libraries(dirs: Iterable[str] = SYSTEM_LIB_DIRS) -> list[str]:
    """The host's own libssl/libgnutls files (one path per file)."""
    found = {}
    for d in dirs:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            if name.startswith(("libssl.so.", "libgnutls.so.")):
                path = os.path.join(d, name)
                found.setdefault(os.path.realpath(path), path)
    return sorted(found)
