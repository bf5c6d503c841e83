"""The project installed as users and the image install it (``pip install .``, not
editable), into a fresh venv: the package carries the kernel programs (the
top-level probes/ copied in by setup.py), compiles its core, and a collector
started from there loads its programs and captures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import APP_SCRIPT, REPO, Collector, PyServer, free_port, run

pytestmark = pytest.mark.ebpf


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    venv = tmp_path_factory.mktemp("install") / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    # The dependencies come from the development venv (no download here);
    # a path line in a .pth file adds that directory without running its own
    # .pth files, so the checkout's editable install does not leak in.
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    dev_site = subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "dev-deps.pth").write_text(dev_site + "\n")
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(REPO)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return py


def in_venv(py: Path, code: str) -> str:
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd="/", timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.strip()


def test_installed_package_carries_the_programs_and_its_compiled_core(installed):
    where = in_venv(installed, "import akto_collector, akto_collector.kernel.loader as l; "
                               "print(akto_collector.__file__); print(l.probes_dir())")
    package, probes = where.splitlines()
    assert str(REPO) not in package and "site-packages" in package
    assert probes == str(Path(package).parent / "kernel" / "probes")
    assert {p.name for p in Path(probes).iterdir()} >= {"common.h", "socket_trace.c", "tls_trace.c"}
    assert in_venv(installed, "from akto_collector.compiled import summary; print(summary())") == "compiled"
    text = subprocess.run([str(installed), "-m", "akto_collector", "run", "--dump-bpf"], capture_output=True,
                          text=True, cwd="/", timeout=60, env={k: v for k, v in os.environ.items()
                                                              if not k.startswith(("AKTO_", "TRAFFIC_"))}).stdout
    assert "SOCK_DATA(sock, sock_recv_length)" in text and "struct ev_hdr" in text


def test_installed_collector_loads_its_programs_and_captures(installed, ebpf_available, tmp_path):
    srv = PyServer(APP_SCRIPT, free_port())
    c = Collector(tmp_path, {"AKTO_WORKERS": "1"}, python=str(installed), cwd="/")
    try:
        c.wait_log("ready", timeout=120)
        assert run(["curl", "-s", f"http://127.0.0.1:{srv.port}/installed/x"]).returncode == 0
        assert c.wait_pairs(lambda p: p["path"] == "/installed/x" and p["direction"] == "1")
        assert c.stop() == 0
    finally:
        c.stop()
        srv.stop()
    assert not [r for r in c.logs() if r.get("event") == "compiled_core_stale"]
    ready = next(r for r in c.logs() if r.get("event") == "ready")
    assert ready["core"] == "compiled"
