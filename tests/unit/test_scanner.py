"""Process scanner: fake /proc trees with small ELF files built by gcc, and
the real /proc with real python/node/GnuTLS/java processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from akto_collector.supervisor import scanner as scanner_mod
from akto_collector.supervisor.scanner import (
    KIND_BORINGSSL,
    KIND_GNUTLS,
    KIND_NSS,
    KIND_OPENSSL,
    KIND_OPENSSL_STATIC,
    REASON_JAVA,
    ProcessScanner,
    ScanError,
    is_container_cgroup,
)
from akto_collector.procfs import process_comm, process_start_time

GCC = shutil.which("gcc")
needs_gcc = pytest.mark.skipif(GCC is None, reason="gcc not installed")

OPENSSL3 = """
int SSL_read(void *s, void *b, int n) { return 0; }
int SSL_write(void *s, const void *b, int n) { return 0; }
int SSL_read_ex(void *s, void *b, unsigned long n, unsigned long *r) { return 0; }
int SSL_write_ex(void *s, const void *b, unsigned long n, unsigned long *w) { return 0; }
int SSL_do_handshake(void *s) { return 0; }
void SSL_free(void *s) {}
"""
OPENSSL10 = """
int SSL_read(void *s, void *b, int n) { return 0; }
int SSL_write(void *s, const void *b, int n) { return 0; }
"""
LIBCRYPTO = 'const char openssl_version_text[] = "OpenSSL 3.0.99 1 Jan 2030";\n'
BORINGSSL = OPENSSL10 + "int SSL_CTX_set_strict_cipher_list(void *c, const char *s) { return 1; }\n"
GNUTLS = """
long gnutls_record_recv(void *s, void *b, unsigned long n) { return 0; }
long gnutls_record_send(void *s, const void *b, unsigned long n) { return 0; }
"""
NSPR = """
int PR_Read(void *f, void *b, int n) { return 0; }
int PR_Write(void *f, const void *b, int n) { return 0; }
int PR_Recv(void *f, void *b, int n, int fl, long t) { return 0; }
int PR_Send(void *f, const void *b, int n, int fl, long t) { return 0; }
"""
NOT_SSL = "int something_else(void) { return 0; }\n"
STATIC_OPENSSL = (
    OPENSSL10
    + 'const char *v = "OpenSSL 1.1.1w  11 Sep 2023";\n'
    + "int main(void) { return SSL_read(0, 0, 0) + SSL_write(0, 0, 0) + (v[0] == 0); }\n"
)
# nginx: links libssl dynamically, yet carries "built with OpenSSL ..." text.
NGINX_LIKE = (
    "int SSL_read(void *s, void *b, int n);\n"
    'const char *v = "built with OpenSSL 3.0.11 19 Sep 2023";\n'
    "int main(void) { return SSL_read(0, 0, 0) + (v[0] == 0); }\n"
)
PLAIN = "int main(void) { return 0; }\n"
GO_TLS = (
    '__attribute__((section(".go.buildinfo"), used)) const char bi[] = "\\xff Go buildinf:";\n'
    '__attribute__((section(".gopclntab"), used)) const char pcl[] = "crypto/tls.(*Conn).Read";\n'
    + PLAIN
)
GO_NO_TLS = (
    '__attribute__((section(".go.buildinfo"), used)) const char bi[] = "\\xff Go buildinf:";\n'
    '__attribute__((section(".gopclntab"), used)) const char pcl[] = "net/http.(*Server).Serve";\n'
    + PLAIN
)


def _gcc(src: str, out: Path, *args: str) -> Path:
    c = out.with_name(out.name + ".c")
    c.write_text(src)
    subprocess.run([GCC, "-O0", "-o", str(out), str(c), *args], check=True, capture_output=True)
    return out


@pytest.fixture(scope="session")
def elfs(tmp_path_factory) -> dict[str, Path]:
    """Small ELF files standing in for the real libraries and executables."""
    if GCC is None:
        pytest.skip("gcc not installed")
    d = tmp_path_factory.mktemp("elfs")
    so = ("-shared", "-fPIC")
    built = {
        "libssl.so.3": _gcc(OPENSSL3, d / "libssl.so.3", *so),
        "libssl.so.1.0.0": _gcc(OPENSSL10, d / "libssl.so.1.0.0", *so),
        "libcrypto.so.3": _gcc(LIBCRYPTO, d / "libcrypto.so.3", *so),
        "boring/libssl.so": _gcc(BORINGSSL, d / "boring_libssl.so", *so),
        "libgnutls.so.30": _gcc(GNUTLS, d / "libgnutls.so.30", *so),
        "libnspr4.so": _gcc(NSPR, d / "libnspr4.so", *so),
        "libssl3.so": _gcc(NOT_SSL, d / "libssl3.so", *so),
        "bogus/libssl.so.9": _gcc(NOT_SSL, d / "bogus_libssl.so.9", *so),
        "static-exported": _gcc(STATIC_OPENSSL, d / "static-exported", "-rdynamic"),
        "static-symtab": _gcc(STATIC_OPENSSL, d / "static-symtab"),
        "go-tls": _gcc(GO_TLS, d / "go-tls", "-s"),
        "go-plain": _gcc(GO_NO_TLS, d / "go-plain", "-s"),
        "plain": _gcc(PLAIN, d / "plain", "-s"),
    }
    stripped = d / "static-stripped"
    shutil.copy(built["static-symtab"], stripped)
    subprocess.run(["strip", str(stripped)], check=True)
    built["static-stripped"] = stripped
    built["nginx-like"] = _gcc(
        NGINX_LIKE, d / "nginx-like", "-s", f"-L{d}", "-l:libssl.so.3", f"-Wl,-rpath,{d}"
    )
    return built


class FakeProc:
    """A fake proc tree: tmp/proc/PID/{stat,comm,maps,cgroup,exe,root}, each
    root a symlink to a rootfs directory holding the process's files."""

    def __init__(self, tmp: Path) -> None:
        self.proc = tmp / "proc"
        self.proc.mkdir()
        self.tmp = tmp

    def rootfs(self, name: str, files: dict[str, Path]) -> Path:
        """A container image: files copied (or hard-linked when given as
        ("link", path)) into place."""
        root = self.tmp / name
        for dest, src in files.items():
            target = root / dest.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(src, tuple):
                os.link(src[1], target)
            else:
                shutil.copy(src, target)
        return root

    def add(
        self,
        pid: int,
        root: Path,
        exe: str,
        libs: tuple[str, ...] = (),
        comm: str | None = None,
        cgroup: str = "0::/user.slice/user-0.slice/session-1.scope\n",
        start: int | None = None,
        flags: int = 0x400100,
        deleted: dict[str, Path] | None = None,
    ) -> Path:
        """One process. ``deleted`` maps a library path to the file the
        process still maps after it was removed (served by map_files/)."""
        d = self.proc / str(pid)
        if d.exists():
            shutil.rmtree(d)
        d.mkdir()
        comm = comm if comm is not None else os.path.basename(exe)
        start = start if start is not None else 1000 + pid
        # Fields 3..: state ppid pgrp session tty tpgid flags(9) ... starttime(22) ...
        rest = ["S", "1", str(pid), str(pid), "0", "-1", str(flags)]
        rest += ["0"] * 12 + [str(start)] + ["0"] * 30
        (d / "stat").write_text(f"{pid} ({comm}) {' '.join(rest)}\n")
        (d / "comm").write_text(comm + "\n")
        (d / "cgroup").write_text(cgroup)
        (d / "root").symlink_to(root)
        (d / "exe").symlink_to(root / exe.lstrip("/"))
        lines = [f"55d000000000-55d000001000 r-xp 00000000 fe:00 1234 {exe}"]
        addr = 0x7F0000000000
        for lib in libs + ("/usr/lib/x86_64-linux-gnu/libc.so.6",):
            for perms in ("r--p", "r-xp", "rw-p"):
                lines.append(f"{addr:x}-{addr + 0x1000:x} {perms} 00000000 fe:00 4321 {lib}")
                addr += 0x1000
        if deleted:
            (d / "map_files").mkdir()
            for lib, src in deleted.items():
                rng = f"{addr:x}-{addr + 0x1000:x}"
                lines.append(f"{rng} r-xp 00000000 fe:00 99 {lib} (deleted)")
                (d / "map_files" / rng).symlink_to(src)
                addr += 0x1000
        lines.append("7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0          [stack]")
        (d / "maps").write_text("\n".join(lines) + "\n")
        return d

    def scanner(self, **kw) -> ProcessScanner:
        return ProcessScanner(proc_root=str(self.proc), **kw)


LIBDIR = "/usr/lib/x86_64-linux-gnu"


@pytest.fixture
def fake(tmp_path) -> FakeProc:
    return FakeProc(tmp_path)


def _by_kind(result, kind):
    return [lib for lib in result.libraries.values() if lib.kind == kind]


# ---------------------------------------------------------------------------
# shared libraries


@needs_gcc
def test_openssl_found_once_per_file_with_version_from_libcrypto(fake, elfs):
    root = fake.rootfs(
        "host",
        {
            f"{LIBDIR}/libssl.so.3": elfs["libssl.so.3"],
            f"{LIBDIR}/libcrypto.so.3": elfs["libcrypto.so.3"],
            "/usr/bin/python3": elfs["plain"],
        },
    )
    libs = (f"{LIBDIR}/libssl.so.3", f"{LIBDIR}/libcrypto.so.3")
    fake.add(100, root, "/usr/bin/python3", libs)
    fake.add(101, root, "/usr/bin/python3", libs)
    result = fake.scanner().scan()

    assert result.errors == [] and result.unsupported == []
    assert result.scanned == 2
    (lib,) = result.libraries.values()
    assert lib.kind == KIND_OPENSSL
    assert lib.version == "3.0.99"
    assert lib.symbols == (
        "SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex", "SSL_do_handshake", "SSL_free"
    )
    assert set(lib.addresses) == set(lib.symbols) and all(lib.addresses.values())
    assert lib.pids == {100, 101}
    assert lib.path == f"{fake.proc}/100/root{LIBDIR}/libssl.so.3"
    st = os.stat(lib.path)
    assert (lib.dev, lib.ino) == (st.st_dev, st.st_ino) and lib.key in result.libraries


@needs_gcc
def test_same_file_in_two_containers_is_one_library_other_files_are_not(fake, elfs):
    app = {"/bin/app": elfs["plain"]}
    host = fake.rootfs("host", {f"{LIBDIR}/libssl.so.3": elfs["libssl.so.3"], **app})
    # Same inode (as with a shared image layer) under another path in another root.
    host_lib = host / LIBDIR.lstrip("/") / "libssl.so.3"
    same = fake.rootfs("ctr1", {"/usr/lib/libssl.so.3": ("link", host_lib), **app})
    other = fake.rootfs("ctr2", {"/usr/lib/libssl.so.3": elfs["libssl.so.3"], **app})
    fake.add(10, host, "/bin/app", (f"{LIBDIR}/libssl.so.3",))
    fake.add(20, same, "/bin/app", ("/usr/lib/libssl.so.3",))
    fake.add(30, other, "/bin/app", ("/usr/lib/libssl.so.3",))
    result = fake.scanner().scan()
    assert sorted(sorted(lib.pids) for lib in result.libraries.values()) == [[10, 20], [30]]
    # Without a libcrypto to read the full version from, the file name's.
    assert {lib.version for lib in result.libraries.values()} == {"3"}


@needs_gcc
def test_old_openssl_has_no_ex_functions(fake, elfs):
    root = fake.rootfs(
        "r", {"/lib/libssl.so.1.0.0": elfs["libssl.so.1.0.0"], "/bin/app": elfs["plain"]}
    )
    fake.add(5, root, "/bin/app", ("/lib/libssl.so.1.0.0",))
    (lib,) = fake.scanner().scan().libraries.values()
    assert (lib.kind, lib.version) == (KIND_OPENSSL, "1.0.0")
    assert lib.symbols == ("SSL_read", "SSL_write")


@needs_gcc
def test_openssl_renamed_by_auditwheel(fake, elfs):
    lib_dir = "/venv/lib/python3.11/site-packages/psycopg2_binary.libs"
    root = fake.rootfs(
        "r",
        {
            f"{lib_dir}/libssl-1a2b3c4d.so.1.1": elfs["libssl.so.3"],
            f"{lib_dir}/libcrypto-5e6f7a8b.so.1.1": elfs["libcrypto.so.3"],
            "/bin/app": elfs["plain"],
        },
    )
    libs = (f"{lib_dir}/libssl-1a2b3c4d.so.1.1", f"{lib_dir}/libcrypto-5e6f7a8b.so.1.1")
    fake.add(5, root, "/bin/app", libs)
    (lib,) = fake.scanner().scan().libraries.values()
    assert (lib.kind, lib.version) == (KIND_OPENSSL, "3.0.99")


@needs_gcc
def test_boringssl_told_apart_from_openssl(fake, elfs):
    root = fake.rootfs("r", {"/lib/libssl.so": elfs["boring/libssl.so"], "/bin/app": elfs["plain"]})
    fake.add(5, root, "/bin/app", ("/lib/libssl.so",))
    (lib,) = fake.scanner().scan().libraries.values()
    assert (lib.kind, lib.version, lib.symbols) == (KIND_BORINGSSL, "", ("SSL_read", "SSL_write"))


@needs_gcc
def test_gnutls_and_nss(fake, elfs):
    root = fake.rootfs(
        "r",
        {
            f"{LIBDIR}/libgnutls.so.30": elfs["libgnutls.so.30"],
            f"{LIBDIR}/libnspr4.so": elfs["libnspr4.so"],
            f"{LIBDIR}/libssl3.so": elfs["libssl3.so"],
            "/bin/app": elfs["plain"],
        },
    )
    fake.add(1, root, "/bin/app", (f"{LIBDIR}/libgnutls.so.30",))
    fake.add(2, root, "/bin/app", (f"{LIBDIR}/libnspr4.so", f"{LIBDIR}/libssl3.so"))
    # NSPR alone (no NSS SSL layer) carries no TLS: not a library to probe for it.
    fake.add(3, root, "/bin/app", (f"{LIBDIR}/libnspr4.so",))
    result = fake.scanner().scan()
    (gnutls,) = _by_kind(result, KIND_GNUTLS)
    assert gnutls.symbols == ("gnutls_record_recv", "gnutls_record_send")
    assert gnutls.version == "30" and gnutls.pids == {1}
    (nss,) = _by_kind(result, KIND_NSS)
    assert nss.symbols == ("PR_Read", "PR_Write", "PR_Recv", "PR_Send")
    assert nss.pids == {2}
    assert len(result.libraries) == 2


@needs_gcc
def test_library_without_ssl_symbols_is_reported_not_probed(fake, elfs):
    root = fake.rootfs(
        "r", {"/lib/libssl.so.9": elfs["bogus/libssl.so.9"], "/bin/app": elfs["plain"]}
    )
    fake.add(7, root, "/bin/app", ("/lib/libssl.so.9",))
    result = fake.scanner().scan()
    assert result.libraries == {}
    (u,) = result.unsupported
    assert u.pid == 7 and "lacks" in u.reason and "/lib/libssl.so.9" in u.reason


@needs_gcc
def test_deleted_library_is_read_through_map_files(fake, elfs):
    root = fake.rootfs("r", {"/bin/app": elfs["plain"]})
    kept = fake.tmp / "still-mapped-libssl.so.3"
    shutil.copy(elfs["libssl.so.3"], kept)
    d = fake.add(8, root, "/bin/app", deleted={"/lib/libssl.so.3": kept})
    (lib,) = fake.scanner().scan().libraries.values()
    assert lib.path.startswith(f"{d}/map_files/")
    assert lib.ino == os.stat(kept).st_ino and "SSL_read_ex" in lib.symbols


# ---------------------------------------------------------------------------
# executables


@needs_gcc
@pytest.mark.parametrize("exe", ["static-exported", "static-symtab"])
def test_static_openssl_in_executable(fake, elfs, exe):
    root = fake.rootfs("r", {"/usr/bin/server": elfs[exe]})
    fake.add(9, root, "/usr/bin/server")
    fake.add(10, root, "/usr/bin/server")
    result = fake.scanner().scan()
    (lib,) = result.libraries.values()
    assert lib.kind == KIND_OPENSSL_STATIC
    assert lib.version == "1.1.1w"
    assert lib.symbols == ("SSL_read", "SSL_write")
    assert lib.pids == {9, 10}
    assert os.path.samefile(lib.path, root / "usr/bin/server")
    assert result.unsupported == []


@needs_gcc
def test_stripped_static_openssl_is_unsupported(fake, elfs):
    root = fake.rootfs("r", {"/usr/bin/server": elfs["static-stripped"]})
    fake.add(11, root, "/usr/bin/server")
    result = fake.scanner().scan()
    assert result.libraries == {}
    (u,) = result.unsupported
    assert u.pid == 11 and u.comm == "server"
    assert "OpenSSL 1.1.1w" in u.reason and "stripped" in u.reason


@needs_gcc
def test_dynamically_linked_exe_with_openssl_text_is_not_static(fake, elfs):
    # nginx embeds "built with OpenSSL x.y.z" but uses the shared libssl.
    root = fake.rootfs(
        "r", {"/usr/sbin/nginx": elfs["nginx-like"], f"{LIBDIR}/libssl.so.3": elfs["libssl.so.3"]}
    )
    fake.add(12, root, "/usr/sbin/nginx", (f"{LIBDIR}/libssl.so.3",))
    result = fake.scanner().scan()
    assert result.unsupported == []
    assert [lib.kind for lib in result.libraries.values()] == [KIND_OPENSSL]


@needs_gcc
def test_go_with_crypto_tls_that_cannot_be_analysed_is_reported_once_per_process(fake, elfs):
    # A C file dressed with Go's section names: a Go program whose functions
    # cannot be located is refused with the reason (real Go binaries:
    # test_goelf.py, test_capture_go.py).
    root = fake.rootfs("r", {"/app/gosrv": elfs["go-tls"], "/app/gotool": elfs["go-plain"]})
    fake.add(13, root, "/app/gosrv")
    fake.add(14, root, "/app/gotool")
    s = fake.scanner()
    first = s.scan()
    assert [(u.pid, u.comm) for u in first.unsupported] == [(13, "gosrv")]
    reason = first.unsupported[0].reason
    assert reason.startswith("go: ")
    assert first.libraries == {}
    assert s.scan().unsupported == []
    assert s.scan(pids=[13]).unsupported == []
    # Same pid, new process (pid reused or restarted): reported again.
    fake.add(13, root, "/app/gosrv", start=999999)
    assert s.scan().unsupported == [(13, "gosrv", reason)]


@needs_gcc
def test_java_by_exe_name_or_libjvm(fake, elfs):
    root = fake.rootfs(
        "r",
        {
            "/opt/jdk/bin/java": elfs["plain"],
            "/opt/app/launcher": elfs["plain"],
            "/opt/jdk/lib/server/libjvm.so": elfs["plain"],
        },
    )
    fake.add(15, root, "/opt/jdk/bin/java")
    fake.add(16, root, "/opt/app/launcher", ("/opt/jdk/lib/server/libjvm.so",))
    fake.add(17, root, "/opt/app/launcher")
    result = fake.scanner().scan()
    assert sorted(result.unsupported) == [(15, "java", REASON_JAVA), (16, "launcher", REASON_JAVA)]


# ---------------------------------------------------------------------------
# selection of processes


@pytest.mark.parametrize(
    "cgroup, container",
    [
        (
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b.slice/"
            "cri-containerd-0123456789abcdef0123.scope\n",
            True,
        ),
        ("12:pids:/kubepods/besteffort/pod1234/0123456789abcdef\n", True),
        ("0::/system.slice/docker-0123456789abcdef0123456789abcdef.scope\n", True),
        ("11:memory:/docker/0123456789abcdef0123456789abcdef\n", True),
        ("0::/system.slice/crio-0123456789abcdef0123456789abcdef.scope\n", True),
        ("0::/machine.slice/libpod-0123456789abcdef0123456789abcdef.scope/container\n", True),
        ("0::/system.slice/cri-containerd-0123456789abcdef0123.scope\n", True),
        # The runtimes' own daemons and per-container monitors are not containers.
        ("0::/system.slice/containerd.service\n", False),
        ("0::/system.slice/docker.service\n", False),
        ("0::/system.slice/crio-conmon-0123456789abcdef0123456789abcdef.scope\n", False),
        ("0::/machine.slice/libpod-conmon-0123456789abcdef0123456789abcdef.scope\n", False),
        ("0::/user.slice/user-1000.slice/session-2.scope\n", False),
        ("0::/init.scope\n", False),
    ],
)
def test_is_container_cgroup(cgroup, container):
    assert is_container_cgroup(cgroup) is container


@needs_gcc
def test_probe_all_pid_false_scans_only_containers(fake, elfs):
    root = fake.rootfs("r", {"/lib/libssl.so.3": elfs["libssl.so.3"], "/bin/app": elfs["plain"]})
    libs = ("/lib/libssl.so.3",)
    fake.add(1, root, "/bin/app", libs, cgroup="0::/system.slice/containerd.service\n")
    k8s = "0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-0123456789abcdef.scope\n"
    docker = "0::/system.slice/docker-0123456789abcdef0123456789abcdef.scope\n"
    fake.add(2, root, "/bin/app", libs, cgroup=k8s)
    fake.add(3, root, "/bin/app", libs, cgroup=docker)
    fake.add(4, root, "/bin/app", libs)
    only_containers = fake.scanner(probe_all_pid=False).scan()
    assert [sorted(lib.pids) for lib in only_containers.libraries.values()] == [[2, 3]]
    everything = fake.scanner(probe_all_pid=True).scan()
    assert [sorted(lib.pids) for lib in everything.libraries.values()] == [[1, 2, 3, 4]]


@needs_gcc
def test_ignore_pids_kernel_threads_and_empty_maps_are_skipped(fake, elfs):
    root = fake.rootfs("r", {"/lib/libssl.so.3": elfs["libssl.so.3"], "/bin/app": elfs["plain"]})
    fake.add(1, root, "/bin/app", ("/lib/libssl.so.3",))
    fake.add(2, root, "/bin/app", ("/lib/libssl.so.3",))  # the collector itself
    kthread = fake.add(3, root, "/bin/app", flags=0x00208040)  # PF_KTHREAD
    (kthread / "maps").unlink()  # not even read
    zombie = fake.add(4, root, "/bin/app")
    (zombie / "maps").write_text("")
    result = fake.scanner(ignore_pids={2}).scan()
    assert [sorted(lib.pids) for lib in result.libraries.values()] == [[1]]
    assert result.scanned == 1 and result.errors == []


@needs_gcc
def test_unreadable_and_vanished_pids_are_errors(fake, elfs):
    root = fake.rootfs("r", {"/bin/app": elfs["plain"]})
    broken = fake.add(5, root, "/bin/app")
    (broken / "maps").unlink()
    (broken / "maps").mkdir()  # reading it fails like EACCES would
    s = fake.scanner()
    result = s.scan(pids=[5, 424242])
    assert result.errors[0].pid == 5 and "maps" in result.errors[0].reason
    assert result.errors[1] == ScanError(424242, "vanished")
    assert s.scan(pids=[5]).errors[0].pid == 5  # reported again: the caller retries


@needs_gcc
def test_elf_analysis_cached_per_file_identity(fake, elfs, monkeypatch):
    root = fake.rootfs("r", {"/lib/libssl.so.3": elfs["libssl.so.3"], "/bin/app": elfs["plain"]})
    for pid in range(1, 6):
        fake.add(pid, root, "/bin/app", ("/lib/libssl.so.3",))
    calls = []
    real = scanner_mod._analyse_elf
    monkeypatch.setattr(scanner_mod, "_analyse_elf", lambda *a: calls.append(a[0]) or real(*a))
    s = fake.scanner()
    s.scan()
    s.scan()
    assert len(calls) == 2  # libssl once, /bin/app once, for 5 pids and 2 scans
    lib = root / "lib/libssl.so.3"
    os.utime(lib, ns=(1, 1))  # a changed file is analysed afresh
    assert s.scan().libraries and len(calls) == 3


def test_process_start_time_and_comm_real():
    me = os.getpid()
    assert process_comm("/proc", me) == Path(f"/proc/{me}/comm").read_text().strip()
    stat = Path(f"/proc/{me}/stat").read_text()
    assert process_start_time("/proc", me) == int(stat[stat.rindex(")") + 2 :].split()[19])
    assert process_comm("/proc", 2**22 + 7) == ""
    with pytest.raises(OSError):
        process_start_time("/proc", 2**22 + 7)


def test_process_start_time_comm_with_parentheses(fake, tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    fake.add(77, root, "/bin/x", comm="a) (b c", start=123456)
    assert process_start_time(str(fake.proc), 77) == 123456
    assert process_comm(str(fake.proc), 77) == "a) (b c"


# ---------------------------------------------------------------------------
# the real /proc


def _wait_for(fn, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


@pytest.fixture
def spawn():
    procs = []

    def start(*argv, **kw):
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


def _libs_of(scanner, pid):
    return [lib for lib in scanner.scan(pids=[pid]).libraries.values() if pid in lib.pids]


def test_real_python_with_ssl(spawn):
    p = spawn(sys.executable, "-c", "import ssl, time; time.sleep(10)")
    s = ProcessScanner()
    libs = _wait_for(lambda: _libs_of(s, p.pid))
    (lib,) = libs
    assert lib.kind == KIND_OPENSSL
    assert "SSL_read_ex" in lib.symbols and "SSL_write_ex" in lib.symbols
    assert lib.path.startswith(f"/proc/{p.pid}/root/") and "libssl.so" in lib.path
    assert lib.version.startswith(("1.1.1", "3"))


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_real_node_is_openssl_static(spawn):
    node = shutil.which("node")
    p = spawn(node, "-e", "setTimeout(()=>{},10000)")
    s = ProcessScanner()
    libs = _wait_for(lambda: [lib for lib in _libs_of(s, p.pid) if lib.kind == KIND_OPENSSL_STATIC])
    (lib,) = libs
    assert os.path.samefile(lib.path, node)
    assert {"SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex", "SSL_free"} <= set(lib.symbols)


def test_real_gnutls(spawn):
    code = "import ctypes, time; ctypes.CDLL('libgnutls.so.30'); time.sleep(10)"
    p = spawn(sys.executable, "-c", code)
    s = ProcessScanner()
    libs = _wait_for(lambda: [lib for lib in _libs_of(s, p.pid) if lib.kind == KIND_GNUTLS])
    if not libs and p.poll() is not None:
        pytest.skip("libgnutls.so.30 not installed")
    (lib,) = libs
    assert lib.symbols == ("gnutls_record_recv", "gnutls_record_send")


@pytest.mark.skipif(shutil.which("java") is None, reason="java not installed")
def test_real_java_is_unsupported(spawn, tmp_path):
    src = tmp_path / "Sleep.java"
    src.write_text(
        "class Sleep { public static void main(String[] a) throws Exception"
        " { Thread.sleep(10000); } }"
    )
    p = spawn(shutil.which("java"), str(src))  # source-file mode: no javac step
    s = ProcessScanner()
    found = _wait_for(lambda: s.scan(pids=[p.pid]).unsupported)
    assert found and found[0].pid == p.pid and found[0].reason == REASON_JAVA


def test_real_full_scan_analyses_no_file_again_after_the_first(monkeypatch):
    # How long a scan takes is bench/bench_scanner.py's figure, not a test's.
    s = ProcessScanner(ignore_pids={os.getpid()})
    s.scan()
    calls = []
    real = scanner_mod._analyse_elf
    monkeypatch.setattr(scanner_mod, "_analyse_elf", lambda *a: calls.append(a[0]) or real(*a))
    result = s.scan()
    assert result.scanned > 0
    # Only processes that started between the two scans may add a file.
    assert len(calls) <= 3, calls
