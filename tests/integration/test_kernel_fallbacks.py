"""The kernel side on nodes that lack something: no headers for the running
kernel in a read-only /lib/modules, and no sock tracepoints (older kernels)."""

from __future__ import annotations

import sys

import pytest

from conftest import run

pytestmark = pytest.mark.ebpf



def captured(c, app, path: str) -> list[dict]:
    assert run(["curl", "-s", f"http://127.0.0.1:{app.port}{path}"]).returncode == 0
    return c.wait_pairs(lambda p: p["path"] == path, count=2, timeout=20)


def test_a_read_only_empty_lib_modules_is_left_alone_and_capture_works(start_collector, tmp_path, app):
    # A pod's /lib/modules without this kernel's entry: the collector must not
    # write there, and compiles against the nearest headers under /usr/src.
    wrapper = tmp_path / "python-in-empty-modules"
    wrapper.write_text("#!/bin/sh\nexec unshare -m --propagation private sh -c "
                       "'mount -t tmpfs -o ro,size=1m none /lib/modules && exec \"$0\" \"$@\"' "
                       f"{sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    c = start_collector(python=str(wrapper))
    fallback = c.wait_log("kernel_headers_fallback")
    assert fallback["kind"] == "nearest" and "/usr/src/linux-headers-" in fallback["using"]
    assert {p["direction"] for p in captured(c, app, "/fallback-headers")} == {"1", "2"}


def attached_tracepoints(pid: int) -> set[str]:
    out = run(["bpftool", "perf", "show", "--json"]).stdout
    import orjson

    return {e["tracepoint"] for e in orjson.loads(out or b"[]") if e.get("pid") == pid and "tracepoint" in e}


def test_the_sock_path_leaves_file_reads_and_writes_untraced(start_collector, app):
    c = start_collector()
    tps = attached_tracepoints(c.proc.pid)
    assert {"sock_recv_length", "sock_send_length", "sys_enter_accept4", "sys_enter_close"} <= tps
    assert not tps & {"sys_enter_read", "sys_exit_read", "sys_enter_write", "sys_exit_write"}
    assert {p["direction"] for p in captured(c, app, "/sock-path")} == {"1", "2"}


def test_the_syscall_fallback_captures_new_and_older_connections_and_not_files(start_collector, tmp_path, app):
    # A keep-alive connection opened before the collector: taken once a call starts like HTTP.
    import http.client

    early = http.client.HTTPConnection("127.0.0.1", app.port, timeout=5)
    early.request("GET", "/before")
    early.getresponse().read()
    c = start_collector(env={"AKTO_SOCK_TRACEPOINTS": "off"})
    assert c.wait_log("syscall_data_path")["setting"] == "off"
    tps = attached_tracepoints(c.proc.pid)
    assert {"sys_enter_read", "sys_exit_write", "sys_enter_accept4"} <= tps
    assert not tps & {"sock_recv_length", "sock_send_length"}
    assert {p["direction"] for p in captured(c, app, "/fallback-new")} == {"1", "2"}
    early.request("GET", "/fallback-older")
    early.getresponse().read()
    older = c.wait_pairs(lambda p: p["path"] == "/fallback-older", count=2, timeout=20)
    assert {p["direction"] for p in older} == {"1", "2"}
    # A file whose bytes look like HTTP is not a connection: user space checks in /proc.
    f = tmp_path / "exchange.txt"
    script = (f"import os, time\nfor _ in range(3):\n"
              f"    open({str(f)!r}, 'wb').write(b'GET /from-a-file HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n"
              f"    fd = os.open({str(f)!r}, os.O_RDWR); os.read(fd, 4096)\n"
              "    os.write(fd, b'HTTP/1.1 200 OK\\r\\nContent-Length: 0\\r\\n\\r\\n')\n"
              "    time.sleep(1); os.close(fd)\n")
    assert run([sys.executable, "-c", script]).returncode == 0
    captured(c, app, "/after-the-file")
    assert not [p for p in c.read_pairs() if p["path"] == "/from-a-file"]
    assert c.stats().get("dropped.not_a_socket", 0) >= 1


def test_doctor_on_this_host_finds_that_capture_can_work():
    import orjson

    from conftest import REPO

    r = run([sys.executable, "-m", "akto_collector", "doctor", "--json"], timeout=120, cwd=REPO)
    doc = orjson.loads(r.stdout)
    assert r.returncode == 0 and doc["capture_possible"], doc
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["load"]["status"] == "ok"  # a real program compiled, loaded and attached
    assert checks["tracepoints"]["status"] == "ok"
